"""Hostile traffic: generated captures that try to make the analyzer use unbounded memory or time.

``generate`` writes them (nothing is committed, nothing is sent anywhere: these are files);
``test_hostile`` checks the limits, anomalies and accounting; ``bench/hostile.py`` times them at full size.
"""
