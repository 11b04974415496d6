"""How a build runs: the local runner, the Dask cluster, Beam's logging and the workers' start-up hook."""
