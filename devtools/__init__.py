"""Development tools beside the product, never imported by it: the private stack of
`make run` (devstack), the demo data and meshes (demo, shapes), the fault proxy and the
local Redis Cluster and Sentinel used by tests and benchmarks."""
