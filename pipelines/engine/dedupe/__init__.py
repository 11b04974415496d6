"""The dedupe stages in Beam (exact, near, semantic) over the engine's plan and staging, with their keyed combines and connected components."""
