"""The device farm on Ray: one `bench` across every device of a cluster, one results file.

Takes a `BenchRequest` with one `DeviceMatrix` per device label and the address of a Ray cluster whose
devices joined with a `vit-deploy/device` label and one `bench_slot` (`worker` builds that `ray start`
line from this machine's detection); hands on, through the harness's `Executor` seam
(`executor.RayExecutor`), result rows tagged with the node that ran them, so `run_bench` writes the results
file exactly as for a local run. `node` is what runs on each device (one actor holding its slot), `doctor`
lists the nodes and what each can build and run. Ray is imported inside functions only: the default
install never loads it (`pip install -e .[cluster]` brings it).
"""
