"""SegMetrics against a hand-computed confusion matrix, both mIoU conventions (docs/design.md §5)."""

from __future__ import annotations

import json

import pytest
import torch

from equiseg.engine import SegMetrics

# Five classes, ignore 255. Pixels as (target, pred):
#   (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,3) (255,0) (255,4)
# Class 3 is predicted once but never in the ground truth; class 4 occurs nowhere (no union) once
# the ignored pixels are skipped (its one prediction sits on an ignored pixel).
TARGET = torch.tensor([[[0, 0, 0], [1, 1, 2], [2, 255, 255]]])  # 1×3×3
PRED = torch.tensor([[[0, 0, 1], [1, 2, 2], [3, 0, 4]]])
# Confusion matrix (rows: ground truth, columns: prediction):
#        p0 p1 p2 p3 p4 | GT
#   t0 [  2  1  0  0  0 ]  3
#   t1 [  0  1  1  0  0 ]  2
#   t2 [  0  0  1  1  0 ]  2
#   t3 [  0  0  0  0  0 ]  0
#   t4 [  0  0  0  0  0 ]  0
#   PD    2  2  2  1  0
EXPECTED_MATRIX = [
    [2, 1, 0, 0, 0],
    [0, 1, 1, 0, 0],
    [0, 0, 1, 1, 0],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
]
# TP = 2,1,1,0,0; union = GT + PD - TP = 3, 3, 3, 1, 0
# IoU = 2/3, 1/3, 1/3, 0, (no union)
#   reference: (2/3 + 1/3 + 1/3 + 0 + 0) / 5 = 4/15 = 26.6667 %
#   present:   (2/3 + 1/3 + 1/3 + 0) / 4     = 1/3  = 33.3333 %
# Acc = TP/GT = 2/3, 1/2, 1/2, (no GT), (no GT)
#   reference: (2/3 + 1/2 + 1/2 + 0 + 0) / 5 = 1/3 = 33.3333 %
#   present:   (2/3 + 1/2 + 1/2) / 3         = 5/9 = 55.5556 %
# aAcc = ΣTP / ΣGT = 4/7 = 57.1429 % (both conventions)
NAMES = ["road", "car", "sky", "pole", "bus"]


def _filled() -> SegMetrics:
    m = SegMetrics(5, ignore_index=255, class_names=NAMES)
    m.update(PRED, TARGET)
    return m


def test_confusion_matrix_by_hand() -> None:
    m = _filled()
    assert m.matrix.tolist() == EXPECTED_MATRIX
    assert m.num_ignored == 2


def test_reference_convention_by_hand() -> None:
    r = _filled().compute("reference")
    assert r["convention"] == "reference"
    assert r["mIoU"] == pytest.approx(100 * 4 / 15)
    assert r["mAcc"] == pytest.approx(100 / 3)
    assert r["aAcc"] == pytest.approx(100 * 4 / 7)
    iou = {k: v["IoU"] for k, v in r["per_class"].items()}
    acc = {k: v["Acc"] for k, v in r["per_class"].items()}
    assert iou == pytest.approx({"road": 200 / 3, "car": 100 / 3, "sky": 100 / 3, "pole": 0.0, "bus": 0.0})
    assert acc == pytest.approx({"road": 200 / 3, "car": 50.0, "sky": 50.0, "pole": 0.0, "bus": 0.0})
    assert r["absent_classes"] == ["bus"]
    assert r["num_pixels"] == 7


def test_present_convention_by_hand() -> None:
    r = _filled().compute("present")
    assert r["convention"] == "present"
    assert r["mIoU"] == pytest.approx(100 / 3)
    assert r["mAcc"] == pytest.approx(500 / 9)
    assert r["aAcc"] == pytest.approx(100 * 4 / 7)
    assert r["per_class"]["pole"] == {"IoU": 0.0, "Acc": None}  # predicted, never in GT: IoU 0 counts
    assert r["per_class"]["bus"] == {"IoU": None, "Acc": None}  # no union: left out
    json.dumps(r, allow_nan=False)  # metrics.json-ready: no NaN


def test_unknown_convention_lists_choices() -> None:
    with pytest.raises(ValueError, match="reference"):
        _filled().compute("mmseg")  # type: ignore[arg-type]


def test_ignore_index_respected() -> None:
    base = _filled().matrix.clone()
    other = PRED.clone()
    other[TARGET == 255] = 1  # change predictions only on ignored pixels
    m = SegMetrics(5)
    m.update(other, TARGET)
    assert torch.equal(m.matrix, base)
    # ignore_index=None scores every pixel, so 255 is an out-of-range target and compute() refuses it.
    m = SegMetrics(5, ignore_index=None)
    m.update(PRED, TARGET)
    with pytest.raises(ValueError, match="target pixel"):
        m.compute()


def test_custom_ignore_index_inside_class_range() -> None:
    m = SegMetrics(3, ignore_index=0)
    m.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 1, 2]))
    # pixels with target 0 dropped: (1,2) and (2,2)
    assert m.matrix.tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 1]]


def test_out_of_range_prediction_raises_at_compute() -> None:
    m = SegMetrics(3)
    m.update(torch.tensor([0, 7]), torch.tensor([0, 1]))  # no host sync here...
    with pytest.raises(ValueError, match="1 prediction"):  # ...the error surfaces at compute()
        m.compute()


def test_logits_are_argmaxed() -> None:
    logits = torch.nn.functional.one_hot(PRED, 5).permute(0, 3, 1, 2).float()  # 1×5×3×3
    m = SegMetrics(5)
    m.update(logits, TARGET)
    assert m.matrix.tolist() == EXPECTED_MATRIX
    m2 = SegMetrics(5)
    m2.update(PRED[0], TARGET[0])  # H×W
    assert m2.matrix.tolist() == EXPECTED_MATRIX


def test_shape_and_dtype_errors() -> None:
    m = SegMetrics(5)
    with pytest.raises(ValueError, match="shape"):
        m.update(PRED[:, :2], TARGET)
    with pytest.raises(TypeError, match="integer"):
        m.update(PRED.float(), TARGET)


def test_accumulation_equals_concatenation() -> None:
    g = torch.Generator().manual_seed(0)
    k = 7
    preds = [torch.randint(0, k, (2, 13, 17), generator=g) for _ in range(4)]
    targets = [torch.randint(0, k + 1, (2, 13, 17), generator=g) for _ in range(4)]
    for t in targets:
        t[t == k] = 255
    acc = SegMetrics(k)
    for p, t in zip(preds, targets, strict=True):
        acc.update(p, t.to(torch.uint8))  # any integer dtype
    once = SegMetrics(k)
    once.update(torch.cat(preds), torch.cat(targets))
    assert torch.equal(acc.matrix, once.matrix)
    assert acc.matrix.sum() == sum(int((t != 255).sum()) for t in targets)
    # Same as a direct bincount reference.
    t, p = torch.cat(targets).flatten(), torch.cat(preds).flatten()
    keep = t != 255
    ref = torch.bincount(t[keep] * k + p[keep], minlength=k * k).view(k, k)
    assert torch.equal(acc.matrix, ref)
    for conv in ("reference", "present"):
        assert acc.compute(conv) == once.compute(conv)


def test_reset_merge_state_dict_and_single_process_all_reduce() -> None:
    m = _filled()
    m.all_reduce()  # not distributed: no-op
    assert m.matrix.tolist() == EXPECTED_MATRIX
    m.update(PRED, TARGET)  # still allowed, nothing was reduced
    assert m.matrix.sum() == 14

    fresh = SegMetrics(5, class_names=NAMES)
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.matrix, m.matrix)

    merged = _filled().merge(_filled())
    assert torch.equal(merged.matrix, m.matrix)
    with pytest.raises(ValueError, match="merge"):
        merged.merge(SegMetrics(4))

    m.reset()
    assert m.matrix.sum() == 0
    assert m.compute("present")["num_pixels"] == 0


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        SegMetrics(0)
    with pytest.raises(ValueError, match="class names"):
        SegMetrics(3, class_names=["a", "b"])


def test_class_ids_is_argmax_with_its_tie_and_nan_rules():
    from equiseg.engine.metrics import class_ids

    logits = torch.randn(3, 7, 9, 11)
    logits[0, 2] = logits[0, 5] = 50.0  # a tie: the first maximum wins
    logits[1, 4, 3, 3] = float("nan")  # NaN wins, as in argmax
    assert torch.equal(class_ids(logits), logits.argmax(1))
    assert class_ids(logits)[0].unique().tolist() == [2] and class_ids(logits)[1, 3, 3] == 4
    assert torch.equal(class_ids(logits[0], dim=0), logits[0].argmax(0))
    assert torch.equal(class_ids(logits.bfloat16()), logits.bfloat16().argmax(1))
