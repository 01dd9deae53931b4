"""Reading results files: an HTML report with plots and the MAC-to-latency fidelity table, and regressions.

Takes one or more results files (`deploy.bench.results`, as `bench` writes them); hands on
`DIR/index.html` with its PNG plots (`html`, `plots`, `fidelity`), or a comparison of two runs that
exits non-zero past a slowdown threshold (`compare`). Neither needs torch or a runtime.
"""
