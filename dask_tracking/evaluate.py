"""Accuracy of a tracking run against the ground truth of a synthetic movie.

:func:`evaluate` compares the outputs of a run (the output store written by
:func:`dask_tracking.run`, or the in-memory results of the stages) with a
:class:`~dask_tracking.datasets.SyntheticTruth` and reports:

* **flow**: endpoint error of every flow row (``|v - v_true|`` in um, median
  and 90th percentile) and the share of rows whose end point lies on another
  object than the one the row starts on (nearest true object, so a row ending
  just beside its object is not counted as wrong);
* **labels**: per frame, the *coverage* (share of true object voxels that carry a
  label) and the *identity accuracy* (share of labelled object voxels whose label
  maps to their true object). Labels are compared up to a permutation fixed at the
  reference frame: each label id is mapped to the true object it overlaps most
  there, so an identity that drifts onto another object later counts as wrong;
* **tracks**: per frame, the share of tracks alive (tracks with a point at that
  frame among the tracks started at or before it) and the median distance, um,
  between each live point and the true position of the material point the track
  started on.

Work is one task per frame pair (flow) or frame (labels, tracks) holding one
frame of labels and truth: nothing larger is ever computed at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import dask
import numpy as np

from .dataset import InputError

__all__ = ["AccuracyReport", "evaluate", "load_truth", "truth_spec"]

#: Generators a truth spec may name, with the function that rebuilds the movie.
GENERATORS = ("synthetic", "synthetic_hard")


@dataclass(frozen=True)
class AccuracyReport:
    """Accuracy of one run against a synthetic truth.

    Attributes
    ----------
    flow : dict
        ``rows`` (int), ``epe_median_um``, ``epe_p90_um``, ``wrong_object_share`` (floats,
        NaN without rows) and ``epe_median_um_per_pair`` (list, one per frame pair).
    labels : dict
        ``coverage`` and ``identity_accuracy``: lists with one float per frame
        (NaN where the frame has no object voxel); ``reference_frame`` (int).
    tracks : dict
        ``n_tracks`` (int), ``alive_share`` and ``position_error_median_um``: lists with one
        float per frame (NaN before any track starts or with no live track).
    source : str
        What was evaluated.
    """

    flow: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    tracks: dict = field(default_factory=dict)
    source: str = ""

    def last(self, section: str, key: str) -> float:
        """The value of a per-frame list at the last frame (NaN if absent)."""
        v = getattr(self, section).get(key)
        return float(v[-1]) if v else float("nan")

    def to_dict(self) -> dict:
        """A JSON-able dict (NaN written as None)."""
        def clean(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, (float, np.floating)):
                return None if not np.isfinite(v) else float(v)
            if isinstance(v, np.integer):
                return int(v)
            return v
        return clean({"source": self.source, "flow": self.flow, "labels": self.labels,
                      "tracks": self.tracks})

    def summary(self) -> str:
        """A few lines for a terminal."""
        f, lab, tr = self.flow, self.labels, self.tracks
        lines = [f"accuracy of {self.source}"]
        if f:
            lines.append(f"  flow: {f['rows']} rows, endpoint error median {f['epe_median_um']:.4f} um, "
                         f"p90 {f['epe_p90_um']:.4f} um, wrong object {100 * f['wrong_object_share']:.2f}%")
        if lab:
            cov = np.asarray(lab["coverage"], float)
            lines.append(f"  labels: coverage min {np.nanmin(cov):.4f}, identity accuracy last frame "
                         f"{self.last('labels', 'identity_accuracy'):.4f} (min "
                         f"{np.nanmin(np.asarray(lab['identity_accuracy'], float)):.4f})")
        if tr:
            lines.append(f"  tracks: {tr['n_tracks']} tracks, alive at last frame "
                         f"{100 * self.last('tracks', 'alive_share'):.1f}%, median position error last "
                         f"frame {self.last('tracks', 'position_error_median_um'):.4f} um")
        return "\n".join(lines)


# ------------------------------------------------------------------------ truth
def truth_spec(generator: str, **kwargs: Any) -> dict:
    """A JSON-able description of a synthetic movie: ``{"generator": ..., "kwargs": ...}``.

    ``load_truth(truth_spec("synthetic_hard", n_frames=20, seed=1))`` rebuilds its truth.
    """
    if generator not in GENERATORS:
        raise InputError(f"generator must be one of {GENERATORS}, got {generator!r}")
    return {"generator": generator,
            "kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}}


def load_truth(truth: Any) -> Any:
    """A :class:`~dask_tracking.datasets.SyntheticTruth` from any accepted form.

    Parameters
    ----------
    truth : SyntheticTruth, TrackingDataset, dict, str or Path
        A truth; a dataset carrying one (``ds.truth``); a truth spec (see
        :func:`truth_spec`); a JSON file or JSON text holding one; or a zarr
        store written by :func:`~dask_tracking.datasets.write_synthetic_zarr`
        (its ``synthetic`` attribute).

    Raises
    ------
    InputError
        If ``truth`` is none of these.
    """
    from .datasets import SyntheticTruth, synthetic, synthetic_hard

    if isinstance(truth, SyntheticTruth):
        return truth
    if getattr(truth, "truth", None) is not None and isinstance(truth.truth, SyntheticTruth):
        return truth.truth
    spec = truth
    if isinstance(truth, (str, Path)):
        text = str(truth)
        p = Path(text)
        if text.lstrip().startswith("{"):
            spec = _json(text, "truth")
        elif p.is_dir() and ((p / "zarr.json").exists() or (p / ".zgroup").exists()):
            import zarr

            attrs = dict(zarr.open_group(str(p), mode="r").attrs)
            if "synthetic" in attrs:
                spec = {"generator": "synthetic", "kwargs": dict(attrs["synthetic"])}
            elif "truth" in attrs:
                spec = attrs["truth"]
            else:
                raise InputError(f"truth store {text!r} has no 'synthetic' or 'truth' attribute; allowed: a "
                                 "store written by write_synthetic_zarr or an output with a truth spec")
        elif p.is_file():
            spec = _json(p.read_text(), f"truth file {text!r}")
        else:
            raise InputError(f"truth {text!r} is neither JSON text, a JSON file nor a zarr store")
    if not isinstance(spec, Mapping) or spec.get("generator") not in GENERATORS:
        raise InputError(
            f"truth must be a SyntheticTruth, a dataset with one, or a spec {{'generator': one of "
            f"{GENERATORS}, 'kwargs': {{...}}}}, got {truth!r}"
        )
    kw = dict(spec.get("kwargs", {}))
    if spec["generator"] == "synthetic":
        ndim = int(kw.pop("ndim", 3))
        n_frames = int(kw.pop("n_frames", 8))
        for key in ("shape", "spacing", "blur_um", "chunks"):
            if isinstance(kw.get(key), list):
                kw[key] = tuple(kw[key])
        return synthetic(ndim, n_frames, **kw).truth
    for key in ("shape", "spacing", "blur_um", "chunks"):
        if isinstance(kw.get(key), list):
            kw[key] = tuple(kw[key])
    return synthetic_hard(**kw).truth


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{what} is not valid JSON: {e}") from None


# --------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class _Outputs:
    flow: Any          # FlowTable or None
    labels: Any        # dask array (T, ...) or None
    tracks: Any        # ndarray (K, 2+d) or None
    source: str


def _outputs(obj: Any) -> _Outputs:
    import dask.array as da

    from .flow.table import FlowTable

    if isinstance(obj, (str, Path)):
        import zarr

        p = Path(obj)
        if not p.exists():
            raise InputError(f"output {str(obj)!r} does not exist")
        try:
            g = zarr.open_group(str(p), mode="r")
        except Exception as e:  # noqa: BLE001 - any unreadable store
            raise InputError(f"output {str(obj)!r} is not a readable zarr group: {e}") from None
        flow = FlowTable.from_zarr(g) if "flow" in g else None
        labels = da.from_zarr(g["labels_reassigned"]) if "labels_reassigned" in g else None
        tracks = np.asarray(g["tracks"][...]) if "tracks" in g else None
        return _Outputs(flow, labels, tracks, str(p))
    if isinstance(obj, Mapping):
        get = obj.get
    else:
        def get(k: str, default: Any = None) -> Any:
            return getattr(obj, k, default)
    flow = get("flow", None)
    if flow is not None and not isinstance(flow, FlowTable):
        raise InputError(f"results['flow'] must be a FlowTable, got {type(flow).__name__}")
    labels = get("labels", None)
    if labels is not None and not isinstance(labels, da.Array):
        labels = da.from_array(np.asarray(labels), chunks=(1,) + tuple(np.shape(labels)[1:]))
    tracks = get("tracks", None)
    if tracks is not None:
        tracks = np.asarray(getattr(tracks, "data", tracks), dtype=np.float64)
    if flow is None and labels is None and tracks is None:
        raise InputError(
            "output_or_results must be an output store path, or a mapping/object with at least one of "
            f"'flow' (FlowTable), 'labels' (T, ...) array, 'tracks' (rows); got {type(obj).__name__}"
        )
    return _Outputs(flow, labels, tracks, str(get("source", "results") or "results"))


# ------------------------------------------------------------------------ flow
def _flow_pair(rows: Any, truth: Any, t: int) -> np.ndarray:
    """(n, 2) endpoint error (um) and wrong-object flag of the rows of pair ``t``."""
    rows = np.asarray(rows, dtype=np.float64)
    d = len(truth.spacing)
    if rows.size == 0:
        return np.zeros((0, 2))
    c, v = rows[:, 1:1 + d], rows[:, 1 + d:1 + 2 * d]
    s = np.asarray(truth.spacing)
    err = np.linalg.norm((v - truth.displacement(c, t)) * s, axis=1)
    wrong = truth.object_at(c, t, nearest=True) != truth.object_at(c + v, t + 1, nearest=True)
    return np.stack([err, wrong.astype(float)], axis=1)


def _flow_metrics(flow: Any, truth: Any) -> list:
    return [dask.delayed(_flow_pair)(flow.frame(t), truth, t) for t in range(flow.n_frames - 1)]


def _summarise_flow(parts: list[np.ndarray]) -> dict:
    allp = np.concatenate(parts) if parts else np.zeros((0, 2))
    n = len(allp)
    nan = float("nan")
    return {
        "rows": int(n),
        "epe_median_um": float(np.median(allp[:, 0])) if n else nan,
        "epe_p90_um": float(np.percentile(allp[:, 0], 90)) if n else nan,
        "wrong_object_share": float(allp[:, 1].mean()) if n else nan,
        "epe_median_um_per_pair": [float(np.median(p[:, 0])) if len(p) else nan for p in parts],
    }


# ---------------------------------------------------------------------- labels
def _contingency(labels: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """(n, 3) int64 rows ``label, object, voxels`` over the voxels of one frame."""
    lab = np.asarray(labels).ravel().astype(np.int64)
    obj = np.asarray(objects).ravel().astype(np.int64)
    keys = lab * (int(obj.max(initial=0)) + 1) + obj
    u, n = np.unique(keys, return_counts=True)
    base = int(obj.max(initial=0)) + 1
    return np.stack([u // base, u % base, n], axis=1)


def _summarise_labels(tables: list[np.ndarray], reference_frame: int) -> dict:
    ref = tables[reference_frame]
    ref = ref[(ref[:, 0] > 0) & (ref[:, 1] > 0)]
    mapping: dict[int, int] = {}
    for lab in np.unique(ref[:, 0]):
        r = ref[ref[:, 0] == lab]
        mapping[int(lab)] = int(r[np.argmax(r[:, 2]), 1])
    cov, acc = [], []
    for tab in tables:
        objv = tab[tab[:, 1] > 0]
        total = objv[:, 2].sum()
        lab = objv[objv[:, 0] > 0]
        labelled = lab[:, 2].sum()
        ok = sum(int(n) for l_, o, n in lab if mapping.get(int(l_), -1) == int(o))
        cov.append(float(labelled / total) if total else float("nan"))
        acc.append(float(ok / labelled) if labelled else float("nan"))
    return {"coverage": cov, "identity_accuracy": acc, "reference_frame": int(reference_frame)}


# ---------------------------------------------------------------------- tracks
def _summarise_tracks(rows: np.ndarray, truth: Any, n_frames: int) -> dict:
    nan = float("nan")
    if rows is None or len(rows) == 0:
        return {"n_tracks": 0, "alive_share": [nan] * n_frames,
                "position_error_median_um": [nan] * n_frames}
    d = rows.shape[1] - 2
    s = np.asarray(truth.spacing)
    ids = rows[:, 0].astype(np.int64)
    tt = np.rint(rows[:, 1]).astype(np.int64)
    order = np.lexsort((tt, ids))
    ids, tt, pos = ids[order], tt[order], rows[order, 2:2 + d]
    first = np.r_[True, ids[1:] != ids[:-1]]
    start_t = dict(zip(ids[first].tolist(), tt[first].tolist()))
    start_p = dict(zip(ids[first].tolist(), pos[first]))
    n_tracks = len(start_t)
    starts = np.array([start_t[i] for i in ids])
    start_pos = np.stack([start_p[i] for i in ids])
    true = np.empty_like(pos)
    for t0 in np.unique(starts):
        for t in np.unique(tt[starts == t0]):
            sel = (starts == t0) & (tt == t)
            true[sel] = truth.position(start_pos[sel], float(t0), float(t))
    err = np.linalg.norm((pos - true) * s, axis=1)
    all_starts = np.array(list(start_t.values()))
    alive, med = [], []
    for t in range(n_frames):
        began = int((all_starts <= t).sum())
        here = tt == t
        alive.append(float(len(np.unique(ids[here])) / began) if began else nan)
        med.append(float(np.median(err[here])) if here.any() else nan)
    return {"n_tracks": int(n_tracks), "alive_share": alive, "position_error_median_um": med}


# ------------------------------------------------------------------------- api
def evaluate(
    output_or_results: Any,
    truth: Any,
    *,
    reference_frame: int = 0,
    flow: bool = True,
    labels: bool = True,
    tracks: bool = True,
    client: Any = None,
) -> AccuracyReport:
    """Accuracy of a run's flow, labels and tracks against a synthetic truth.

    Parameters
    ----------
    output_or_results : str, Path, mapping or object
        An output store of :func:`dask_tracking.run` (``flow``, ``labels_reassigned``,
        ``tracks`` are read from it), or a mapping / object with any of ``flow``
        (:class:`~dask_tracking.flow.table.FlowTable`), ``labels`` ((T, ...) int array,
        e.g. ``reassign_labels(...).labels``) and ``tracks`` (a Tracks or its (K, 2+d) rows).
    truth : SyntheticTruth, TrackingDataset, dict, str or Path
        See :func:`load_truth`.
    reference_frame : int
        Frame at which label ids are mapped to true objects.
    flow, labels, tracks : bool
        Which parts to evaluate (a part absent from the outputs is skipped).
    client : distributed.Client, optional
        Where to compute; default the current client or dask's scheduler.

    Returns
    -------
    AccuracyReport

    Raises
    ------
    InputError
        Bad arguments or outputs that do not fit the truth (frames, axes), before any work.

    Examples
    --------
    >>> from dask_tracking import evaluate                               # doctest: +SKIP
    >>> rep = evaluate("out.zarr", {"generator": "synthetic_hard", "kwargs": {"n_frames": 20}})
    >>> rep.flow["epe_median_um"], rep.last("labels", "identity_accuracy")
    """
    tr = load_truth(truth)
    out = _outputs(output_or_results)
    T = int(tr.n_frames)
    d = len(tr.spacing)
    if isinstance(reference_frame, bool) or not isinstance(reference_frame, (int, np.integer)) \
            or not 0 <= reference_frame < T:
        raise InputError(f"reference_frame must be an integer in [0, {T - 1}], got {reference_frame!r}")
    if out.flow is not None and (out.flow.n_frames != T or out.flow.ndim != d):
        raise InputError(f"the flow covers {out.flow.n_frames} frames in {out.flow.ndim}D but the truth has "
                         f"{T} frames in {d}D")
    if out.labels is not None and tuple(out.labels.shape) != tuple(tr.objects.shape):
        raise InputError(f"labels have shape {tuple(out.labels.shape)} but the truth has "
                         f"{tuple(tr.objects.shape)}")
    if out.tracks is not None and len(out.tracks) and out.tracks.shape[1] != d + 2:
        raise InputError(f"tracks rows must have {d + 2} columns (track_id, t, {d} axes), got "
                         f"{out.tracks.shape[1]}")
    jobs: dict[str, Any] = {}
    if flow and out.flow is not None:
        jobs["flow"] = _flow_metrics(out.flow, tr)
    if labels and out.labels is not None:
        lab = out.labels.rechunk((1,) + tuple(out.labels.shape[1:]))
        obj = tr.objects.rechunk((1,) + tuple(tr.objects.shape[1:]))
        jobs["labels"] = [dask.delayed(_contingency)(lab[t], obj[t]) for t in range(T)]
    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            client = None
    if jobs:
        keys = list(jobs)
        if client is not None:
            computed = client.gather(client.compute([jobs[k] for k in keys]))
        else:
            computed = dask.compute(*[jobs[k] for k in keys])
        res = dict(zip(keys, computed))
    else:
        res = {}
    report_flow = _summarise_flow(list(res["flow"])) if "flow" in res else {}
    report_labels = _summarise_labels(list(res["labels"]), int(reference_frame)) if "labels" in res else {}
    report_tracks = (_summarise_tracks(out.tracks, tr, T)
                     if tracks and out.tracks is not None else {})
    return AccuracyReport(report_flow, report_labels, report_tracks, out.source)
