"""Reading a finished build's OUT folder and showing it: as text (pipelines.inspect) and as one HTML page."""
