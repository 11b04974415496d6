"""How a build runs: the local runner, the Dask cluster and our DaskRunner, Beam's logging and the workers' start-up hook."""
