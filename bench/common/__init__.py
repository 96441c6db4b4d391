"""What the benchmark scripts share, by concern:

* :mod:`bench.common.procs` — child processes (started, logged, stopped together), UDP ports,
  busy processes beside the runs;
* :mod:`bench.common.server` — the private PulseAudio with ``hub`` and ``out`` on one meter;
* :mod:`bench.common.pipelines` — trx and deskcast as configurations and as running processes;
* :mod:`bench.common.measure` — levels and dropouts of the recording, its frame clock, CPU time,
  memory, machine load, percentiles;
* :mod:`bench.common.report` — progress, the header, plain-text tables and the footer.

The scripts put the repository root and ``tests/`` on ``sys.path`` before importing these modules
(``rig`` lives in ``tests/rig``).
"""
