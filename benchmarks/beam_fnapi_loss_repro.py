"""Pure-Beam reproduction: the local FnApiRunner (2 worker processes) silently drops input chunks of big bundles.

No project code. Shape: Create(FILES) | Reshuffle | FlatMap(PER strings of SIZE chars each), flattened with a second
small branch (so the next stage reads a materialized Flatten PCollection, like the old build's 'AllDocs' -> Filter),
then a DoFn that counts the elements each bundle processed (printed by the SDK worker) and a global sum.

    python benchmarks/beam_fnapi_loss_repro.py                   # 120 x 1000 x 8000 chars (~0.97 GB), 2 workers
    python benchmarks/beam_fnapi_loss_repro.py --no-time-flush   # same, runner's periodic flush off: no loss
    python benchmarks/beam_fnapi_loss_repro.py --files 40        # ~0.32 GB: no loss seen

Root cause (apache-beam 2.77, proven by instrumentation): fn_runner.BundleManager._send_input_to_worker writes the
stage input (a ListBuffer of ~10 MB chunks, ~480 MB per worker here) into data_conn.output_stream(), which on the
runner side is a TimeBasedBufferingClosableOutputStream (worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 1000). Its
PeriodicThread runs flush(): get() -> flush_callback (enqueue to a send queue limited to 100 MB, which blocks and
releases the GIL) -> _clear(). write() does not take _flush_lock, so chunks written while the flush is blocked are
discarded by _clear(). Logged in one run: runner wrote 47 chunks = 489,160,400 bytes for bundle_9; the periodic flush
sent 469,530,144 bytes and cleared; the close sent nothing more; the worker processed 2 chunks fewer, no error.

Observed on a loaded 2-core machine (DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing):
~0.97 GB lost elements in 10 of 14 runs (e.g. 'expected 121000 got 119692': 1308 elements = one chunk); ~1.6 GB
lost 7848 (6 chunks); with DATA_BUFFER_TIME_LIMIT_MS = 0 (--no-time-flush) 0 of 3 runs lost; ~0.32 GB none.
The GroupingBuffer suspects (partition() caching + extend() after read, extend() ignoring a ListBuffer, KeyedQueue
merges) never fired in an instrumented build (no extend-after-read, no stage run twice) and are not needed here.
Exit status 1 when elements were lost, 0 when all arrived (it is a race: --tries N).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def run_once(files: int, per: int, size: int, workers: int, no_time_flush: bool = False) -> int:
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    if no_time_flush:  # the runner-side data channel then buffers by size only: no PeriodicThread flushing
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.windowed_value import WindowedValue

    class _CountBundle(beam.DoFn):
        def start_bundle(self):
            self.n = 0

        def process(self, element):
            self.n += 1

        def finish_bundle(self):
            print(f"  worker pid={os.getpid()} processed {self.n} elements in its bundle", flush=True)
            yield WindowedValue(self.n, GlobalWindow().max_timestamp(), [GlobalWindow()])

    def read(f):
        for j in range(per):
            yield (f, j, "x" * size)

    result_path = f"/tmp/beam_fnapi_loss_repro.{os.getpid()}"
    opts = PipelineOptions(["--runner=DirectRunner", f"--direct_num_workers={workers}",
                            "--direct_running_mode=multi_processing"])
    with beam.Pipeline(options=opts) as p:
        a = (p | "Files" >> beam.Create(list(range(files))) | "Spread" >> beam.Reshuffle()
             | "Read" >> beam.FlatMap(read))
        b = p | "Other" >> beam.Create([-1]) | "ReadOther" >> beam.FlatMap(read)
        ((a, b) | "AllDocs" >> beam.Flatten() | "Count" >> beam.ParDo(_CountBundle())
         | "Sum" >> beam.CombineGlobally(sum)
         | "Save" >> beam.Map(lambda n, path=result_path: Path(path).write_text(str(n))))
    got = int(Path(result_path).read_text())
    os.remove(result_path)
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=120)
    ap.add_argument("--per", type=int, default=1000, help="elements per file")
    ap.add_argument("--size", type=int, default=8000, help="characters per element")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-time-flush", action="store_true", help="set worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0")
    ap.add_argument("--tries", type=int, default=3, help="runs (the loss is a race; stops at the first loss)")
    a = ap.parse_args()
    expected = (a.files + 1) * a.per
    for t in range(1, a.tries + 1):
        got = run_once(a.files, a.per, a.size, a.workers, a.no_time_flush)
        print(f"try {t}: expected {expected} got {got}" + (f"  <-- LOST {expected - got}" if got != expected else ""),
              flush=True)
        if got != expected:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
