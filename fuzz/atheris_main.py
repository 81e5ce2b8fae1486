"""libFuzzer (atheris) entry: ``python -m fuzz.atheris_main TARGET CORPUS_DIR [libFuzzer flags...]``.

Used by ``python -m fuzz.run --engine atheris``; the analyzer package is imported under atheris's
coverage instrumentation. The target's exceptions propagate, so libFuzzer saves the input
(``-artifact_prefix``) and stops; hangs are libFuzzer's ``-timeout``.
"""

from __future__ import annotations

import sys


def main() -> None:
    import atheris

    name = sys.argv[1]
    with atheris.instrument_imports(include=["analyzer"]):
        import analyzer
        import analyzer.dispatch
        import analyzer.flows.decode
        import analyzer.http2.connection
        import analyzer.pipeline
        import analyzer.quic.observer
        import analyzer.tls.connection  # noqa: F401
    from fuzz.targets import TARGETS

    fn = TARGETS[name]
    atheris.Setup([sys.argv[0], *sys.argv[3:], sys.argv[2]], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
