"""The build engine: the plan, per-part processing and its staging, shard writing, the Beam graph with its dedupe stages, progress and the report's example reservoirs."""
