"""HEAD's assistant: proposal provenance, per-level NMS, sampling, and the cell gather."""

import torch
from detectron2.layers import nms
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from d2kd.modeling.assistant import AssistantHead, anchor_proposals, gather_cells

A, K = 3, 4  # anchors per cell, classes
STRIDES = (8, 16)
SIZES = [(32, 40), (12, 20)]  # image sizes (h, w), padded to 48 x 48


def _setup(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    gen = DefaultAnchorGenerator(
        sizes=[[16], [32]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=list(STRIDES)
    )
    hw = [(48 // s, 48 // s) for s in STRIDES]
    anchors = gen([torch.zeros(1, 1, h, w) for h, w in hw])
    logits = [torch.randn(n, A * K, h, w, generator=g) for h, w in hw]
    deltas = [0.2 * torch.randn(n, A * 4, h, w, generator=g) for h, w in hw]
    return logits, deltas, anchors


def test_known_anchor_makes_the_top_proposal():
    """A single very confident (level 1, image 0, y 1, x 2, anchor 2, class 3) with zero deltas:
    image 0's top proposal is exactly that anchor's box (clipped) and carries that provenance."""
    logits, deltas, anchors = _setup()
    logits[1][0, 2 * K + 3, 1, 2] = 50.0
    deltas[1][0, slice(2 * 4, 3 * 4), 1, 2] = 0.0
    props = anchor_proposals(logits, deltas, anchors, Box2BoxTransform((1.0,) * 4), SIZES)
    w1 = logits[1].shape[-1]
    box = anchors[1].tensor[(1 * w1 + 2) * A + 2].clone()
    box = torch.minimum(box.clamp(min=0), torch.tensor([40.0, 32.0, 40.0, 32.0]))
    assert props.scores[0][0] == 50.0
    assert torch.allclose(props.boxes[0][0], box)
    got = [int(v[0][0]) for v in (props.level, props.y, props.x, props.anchor)]
    assert got == [1, 1, 2, 2]
    # Cls-tower maps whose cells hold their own (level, image, y, x): CKD reads the right one.
    towers = []
    for lvl, lg in enumerate(logits):
        n, _, h, w = lg.shape
        grid = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
        towers.append(torch.stack([torch.full_like(grid[0], lvl), *grid], 1).float())
    idx = [v[0][:1] for v in (props.level, props.y, props.x)]
    cell = gather_cells(towers, idx[0], torch.zeros_like(idx[0]), idx[1], idx[2])
    assert cell.tolist() == [[1.0, 0.0, 1.0, 2.0]]


def test_every_proposal_decodes_from_its_recorded_anchor():
    """Reference check of all provenance: re-decode each proposal from (level, y, x, anchor)."""
    logits, deltas, anchors = _setup(1)
    t = Box2BoxTransform((1.0,) * 4)
    props = anchor_proposals(logits, deltas, anchors, t, SIZES, pre_nms_topk=20, post_nms_topk=25)
    for i, (h, w) in enumerate(SIZES):
        assert 0 < len(props.boxes[i]) <= 25
        for j in range(len(props.boxes[i])):
            lvl, y, x, a = (int(v[i][j]) for v in (props.level, props.y, props.x, props.anchor))
            wl = logits[lvl].shape[-1]
            anchor = anchors[lvl].tensor[(y * wl + x) * A + a]
            box = t.apply_deltas(deltas[lvl][i, slice(a * 4, a * 4 + 4), y, x][None], anchor[None])[
                0
            ]
            box = torch.minimum(box.clamp(min=0), torch.tensor([w, h, w, h], dtype=box.dtype))
            assert torch.allclose(props.boxes[i][j], box, atol=1e-5)
            assert props.scores[i][j] == logits[lvl][i, slice(a * K, a * K + K), y, x].max()


def test_nms_is_per_level_and_matches_a_loop_reference():
    """Same proposals (as sets of (level, y, x, anchor)) as a per-image, per-level loop."""
    logits, deltas, anchors = _setup(2)
    t = Box2BoxTransform((1.0,) * 4)
    props = anchor_proposals(logits, deltas, anchors, t, SIZES, 30, 1000, 0.5)
    for i, (h, w) in enumerate(SIZES):
        want = []
        for lvl, (lg, dl) in enumerate(zip(logits, deltas)):
            _, _, hl, wl = lg.shape
            cand = []
            for y in range(hl):
                for x in range(wl):
                    for a in range(A):
                        s = lg[i, slice(a * K, a * K + K), y, x].max()
                        cand.append((float(s), y, x, a))
            cand = sorted(cand, reverse=True)[:30]
            boxes, scores, ids = [], [], []
            for s, y, x, a in cand:
                anchor = anchors[lvl].tensor[(y * wl + x) * A + a]
                b = t.apply_deltas(dl[i, slice(a * 4, a * 4 + 4), y, x][None], anchor[None])[0]
                b = torch.minimum(b.clamp(min=0), torch.tensor([w, h, w, h], dtype=b.dtype))
                if b[2] > b[0] and b[3] > b[1]:
                    boxes.append(b), scores.append(s), ids.append((lvl, y, x, a))
            keep = nms(torch.stack(boxes), torch.tensor(scores), 0.5)
            want += [ids[k] for k in keep.tolist()]
        got = {
            tuple(int(v[i][j]) for v in (props.level, props.y, props.x, props.anchor))
            for j in range(len(props.boxes[i]))
        }
        assert got == set(want)
        assert torch.all(props.scores[i][1:] <= props.scores[i][:-1])


def test_gather_cells_reads_the_right_cell():
    maps = [torch.randn(2, 5, 6, 6), torch.randn(2, 5, 3, 3)]
    level, img = torch.tensor([1, 0, 1, 0]), torch.tensor([0, 1, 1, 0])
    y, x = torch.tensor([2, 5, 0, 3]), torch.tensor([1, 4, 2, 0])
    out = gather_cells(maps, level, img, y, x)
    for r in range(4):
        assert torch.equal(out[r], maps[level[r]][img[r], :, y[r], x[r]])


def test_sampling_appends_gt_with_level_minus_one_and_keeps_provenance():
    logits, deltas, anchors = _setup(3)
    props = anchor_proposals(logits, deltas, anchors, Box2BoxTransform((1.0,) * 4), SIZES)
    # A budget above the number of candidates: every proposal and GT box is sampled.
    head = AssistantHead(8, num_classes=K, strides=STRIDES, fc_dim=16, batch_size_per_image=4096)
    targets = []
    for h, w in SIZES:
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor([[2.0, 2.0, 10.0, 10.0]]))
        inst.gt_classes = torch.tensor([1])
        targets.append(inst)
    targets[1] = targets[1][:0]  # an image without objects: all background
    sampled, (img, level, y, x, anchor) = head.sample(props, targets)
    assert img.tolist() == [0] * len(sampled[0]) + [1] * len(sampled[1])
    assert [len(s) for s in sampled] == [len(props.boxes[0]) + 1, len(props.boxes[1])]
    gt_rows = (level[: len(sampled[0])] == -1).nonzero().squeeze(1)
    assert len(gt_rows) == 1, "the appended GT box is sampled as a positive"
    assert torch.equal(sampled[0].proposal_boxes.tensor[gt_rows[0]], targets[0].gt_boxes.tensor[0])
    assert (sampled[1].gt_classes == K).all()
    rows = (level >= 0).nonzero().squeeze(1)
    for r in rows.tolist():  # each anchor-made RoI is one of its image's proposals, same anchor
        i = int(img[r])
        box = torch.cat([s.proposal_boxes.tensor for s in sampled])[r]
        j = (props.boxes[i] == box).all(1).nonzero()[0, 0]
        assert [int(props.level[i][j]), int(props.y[i][j]), int(props.x[i][j])] == [
            int(level[r]),
            int(y[r]),
            int(x[r]),
        ]
        assert int(props.anchor[i][j]) == int(anchor[r])
    feats = [torch.randn(2, 8, 6, 6, requires_grad=True), torch.randn(2, 8, 3, 3)]
    with EventStorage(0):
        out = head(feats, props, targets)
    assert set(out.losses) == {"loss_cls", "loss_box_reg"}
    assert [f.shape[1] for f in out.fcs] == [16, 16]
    sum(out.losses.values()).backward()
    assert feats[0].grad is not None
