"""Where a grid run's time goes: inside training steps vs everything else (start-up, data, validation, test scoring
with LPIPS, samples, saving), in wall and CPU time (user and system), for one ``bench.ablate`` command run in-process.

    PYTHONPATH=. python benchmarks/run_share.py -- --grid smoke --seeds 1 --folds 1 --out /tmp/share --no-progress

Every call of ``bench.training.loop.TrainStep`` (the one training step) is timed with ``getrusage``; the rest of the
process, from before ``import torch`` to the end of the command, is "outside". Prints one JSON line. With
``--workers N`` the training happens in the worker processes: their CPU time is ``children`` (and the steps
inside them are not timed); ``benchmarks/workers_share.py`` compares one worker with several this way.
"""
import resource
import sys
import time

T0 = time.perf_counter()


def _usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt


def main(argv: list[str]) -> dict:
    import json

    from bench import ablate
    from bench.training import loop as train

    inside = [0.0, 0.0, 0.0, 0]
    call = train.TrainStep.__call__

    def timed(self, *a, **k):
        before = _usage()
        try:
            return call(self, *a, **k)
        finally:
            after = _usage()
            for i in range(4):
                inside[i] += after[i] - before[i]

    train.TrainStep.__call__ = timed
    try:
        rc = ablate.main(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
        rc = 0
    end = _usage()
    total = [end[0] - T0, end[1], end[2], end[3]]
    names = ("wall_s", "user_s", "sys_s", "minflt")
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers of --workers (waited for by the launcher)
    out = {"argv": argv, "total": dict(zip(names, total)), "in_steps": dict(zip(names, inside)),
           "children": {"user_s": kids.ru_utime, "sys_s": kids.ru_stime, "minflt": kids.ru_minflt},
           "outside_share_wall": 1 - inside[0] / total[0],
           "outside_share_cpu": 1 - (inside[1] + inside[2]) / (total[1] + total[2]),
           "sys_share_cpu": total[2] / (total[1] + total[2]), "exit_code": rc}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[1:] if args[:1] == ["--"] else args)
