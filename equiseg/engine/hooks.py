"""What runs around a training step (:meth:`equiseg.engine.train.Trainer.after_step`): the run's record
(:class:`TrainLog`: ``log.jsonl``, the progress bar, TensorBoard, the throughput), validation
(:class:`Validator`: metrics, ``best.pt``, ``metrics.json``) and checkpoints (:class:`Checkpointer`:
atomic ``last.pt`` / ``best.pt``, never from a state holding NaN/Inf).

Each hook holds the :class:`~equiseg.engine.train.Trainer` it serves and reads the run's progress
(``it``, ``best``) and set-up (``trainer.s``) from it. Only rank 0 writes files; every rank validates
(the confusion matrices are all-reduced) and takes part in the checkpoint's finiteness verdict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from .checkpoint import save_checkpoint
from .distributed import agree_any
from .evaluate import evaluate, write_metrics
from .failures import NonFiniteLossError
from .tb import TensorBoardLog, panel_indices
from .train_state import checkpoint_state, non_finite_entry

if TYPE_CHECKING:
    from .train import Trainer


class Checkpointer:
    """Atomic ``last.pt`` / ``best.pt`` of the run (:func:`~equiseg.engine.train_state.checkpoint_state`),
    written by rank 0, only between steps, and never from a state that holds NaN/Inf."""

    def __init__(self, trainer: Trainer, held_last: int | None) -> None:
        self.trainer = trainer
        # the iteration work/last.pt holds (None: not written by this run nor the one it continues)
        self.held_last = held_last

    def last_held(self) -> str:
        path = self.trainer.s.work / "last.pt"
        if self.held_last is not None:
            return f"{path} holds iteration {self.held_last}"
        return f"{path} was left unchanged" if path.exists() else f"{path} was not written"

    def try_save(
        self, name: str, iteration: int, *, val_pending: bool = False, agree: bool = True
    ) -> str | None:
        """Write ``name`` at ``iteration`` unless the state holds NaN/Inf: returns the first
        non-finite entry (nothing written) or None. ``agree``: every rank is here, so they decide
        together (one all-reduce); False on paths that only some ranks may reach."""
        t, s = self.trainer, self.trainer.s
        bad = non_finite_entry(s.model, s.opt)
        flag = torch.tensor(float(bad is not None), device=s.device)
        if agree_any(flag) if agree else bad is not None:
            return bad or "another rank's state"
        if s.main:
            save_checkpoint(s.work / name, checkpoint_state(s, iteration, t.best, val_pending))
        if name == "last.pt":
            self.held_last = iteration
        return None

    def save(self, name: str, iteration: int) -> None:
        """:meth:`try_save`, raising :class:`NonFiniteLossError` when the state is not finite."""
        bad = self.try_save(name, iteration)
        if bad is not None:
            raise NonFiniteLossError(
                f"the state at iteration {iteration} is not finite ({bad}), so {self.trainer.s.work / name} "
                f"was not written; {self.last_held()}"
            )


class TrainLog:
    """The run's record: ``log.jsonl`` (rank 0: a ``run`` record at the start, a record every
    ``train.log_interval`` steps and after each validation), the progress bar, TensorBoard
    (``train.tensorboard``), and the throughput between two records (validation time excluded)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.file = None
        self.tb: TensorBoardLog | None = None
        self.tb_rows: list[int] = []
        self.bar: tqdm | None = None
        self.t_last, self.n_last, self.wait = 0.0, 0, 0.0  # throughput since the last record

    def open(self, *, resumed: bool, progress: bool) -> None:
        """Open ``log.jsonl`` and TensorBoard (rank 0) and the progress bar; write the ``run`` record."""
        s, it = self.trainer.s, self.trainer.it
        record = s.batch_record
        if s.main:
            self.file = open(s.work / "log.jsonl", "a")
            md = s.tcfg.modality_dropout
            run_rec = {**record, "modality_dropout": {"mode": md.mode, "p": md.p, "fill": md.fill}}
            self.write({"iter": it, "run": run_rec})
            bs, accum = record["batch_size"], record["accumulate_steps"]
            if record["effective_batch"] != bs:  # accumulation or several processes
                mult = f" × {accum} accumulation steps" if accum > 1 else ""
                print(
                    f"effective batch {record['effective_batch']} = {bs} per process{mult} × "
                    f"{s.dist.world_size} process{'es' if s.dist.world_size > 1 else ''}",
                    flush=True,
                )
        if s.main and s.tcfg.tensorboard:
            # on resume, hide what the interrupted run logged after its checkpoint (as log.jsonl does):
            # events of steps > it; those of step `it` itself were logged before the checkpoint
            self.tb = TensorBoardLog(s.work / "tensorboard", purge_step=it + 1 if resumed else None)
            self.tb_rows = panel_indices(s.val_set)
        self.bar = tqdm(
            total=s.max_iters, initial=it, desc="train", disable=not (progress and s.main), dynamic_ncols=True
        )

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def start_timing(self) -> None:
        self.t_last, self.n_last, self.wait = time.perf_counter(), 0, 0.0

    @contextmanager
    def untimed(self) -> Iterator[None]:
        """Leave what runs inside out of the throughput (img/s measures training, not validation)."""
        start = time.perf_counter()
        yield
        self.t_last += time.perf_counter() - start

    def step(self, it: int, epoch: int, terms: dict[str, torch.Tensor], *, final: bool) -> None:
        """After step ``it``: the bar moves; rank 0 writes a record every ``train.log_interval`` steps
        and at the last step of this call (``final``)."""
        s = self.trainer.s
        self.bar.update(1)
        if not (s.main and (it % s.tcfg.log_interval == 0 or final)):
            return
        now = time.perf_counter()
        # throughput over the last interval (None for the first: it includes start-up)
        effective = s.batch_record["effective_batch"]
        ips = (it - self.n_last) * effective / max(now - self.t_last, 1e-9) if self.n_last else None
        rec = {
            "iter": it,
            "epoch": epoch,
            "lr": s.opt.param_groups[0]["lr"],
            **{k: round(float(v), 6) for k, v in terms.items()},
            "img_per_s": None if ips is None else round(ips, 3),
            "data_wait_s": round(self.wait, 3),
        }
        self.write(rec)
        if self.tb is not None:
            self.tb.log_train(it, terms, lr=rec["lr"], img_per_s=ips)
        self.bar.set_postfix(
            loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}", ips="-" if ips is None else f"{ips:.1f}"
        )
        self.t_last, self.n_last, self.wait = now, it, 0.0

    def validation(self, iteration: int, metrics: dict[str, Any]) -> None:
        """Rank 0: the validation's record, its line under the bar, TensorBoard's scalars and panel."""
        s = self.trainer.s
        val = {k: metrics[k] for k in ("mIoU", "aAcc", "mAcc")}
        self.write({"iter": iteration, "val": val})
        self.bar.write(f"iter {iteration}: val mIoU {metrics['mIoU']:.2f}  aAcc {metrics['aAcc']:.2f}")
        if self.tb is not None:
            self.tb.log_val(iteration, metrics)
            self.tb.log_panel(iteration, s.model, s.val_set, self.tb_rows, s.cfg.eval, s.device)
            self.tb.flush()

    def close(self) -> None:
        """Close ``log.jsonl`` and TensorBoard (also after a failed run: what was logged up to the
        failure stays readable)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class Validator:
    """Validation at an iteration: metrics on the val split, the log, TensorBoard, ``best.pt`` when
    the mIoU improves, ``metrics.json``. A data file error saves ``last.pt`` marked to validate again
    on resume, then stops (:meth:`~equiseg.engine.failures.FailureGuard.stop_on_data_error`)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def due(self, it: int) -> bool:
        s = self.trainer.s
        return it % s.val_interval == 0 or it == s.max_iters

    def run(self, iteration: int) -> None:
        t, s = self.trainer, self.trainer.s
        if s.dist.distributed:  # BN running stats drift apart per rank; evaluate rank 0's
            _broadcast_buffers(s.model)
        try:
            metrics = evaluate(s.model, s.val_set, s.cfg.eval, device=s.device, progress=False)
        except (OSError, ValueError) as e:
            t.guard.stop_on_data_error(e, iteration, val_pending=True)
        metrics["split"] = s.cfg.data.val_split  # metrics.json / .md say which split was scored
        s.net.train()
        t.last_metrics = metrics
        if s.main:
            t.log.validation(iteration, metrics)
        if metrics["mIoU"] > t.best:
            t.best = metrics["mIoU"]
            t.checkpoints.save("best.pt", iteration)
        write_metrics(metrics, s.work, title=f"Validation at iteration {iteration}")


def _broadcast_buffers(model: torch.nn.Module) -> None:
    for b in model.buffers():
        torch.distributed.broadcast(b, src=0)
