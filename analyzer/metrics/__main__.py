"""``python -m analyzer.metrics > docs/metrics.md``: write the metrics glossary as Markdown to stdout.

The only output this package produces; the file itself is written by the shell redirection.
"""

from __future__ import annotations

import sys

from analyzer.metrics import glossary_markdown

if __name__ == "__main__":
    sys.stdout.write(glossary_markdown())
