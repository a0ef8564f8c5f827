"""Chunk reads that belong to one consumer: a leaf read re-issued inside the task that uses it.

A dask array opened from storage (``da.from_zarr``, ``da.from_array``) has one *leaf*
task per chunk: a getter on the stored array, with no computed input. When two tasks
depend on the same chunk key, dask keeps the chunk in memory from the first consumer
until the last one has run. Graphs whose consumers of a chunk are far apart in time
(a per-frame reduction between two passes over the frame, halos shared by
neighbouring blocks) then hold whole frames.

:class:`ChunkReads` gives, per chunk, the graph node a task should use for it: for a
leaf read, a :class:`ChunkRead` made inside the consuming task, which the task calls
if and when it needs the chunk (the values are freed with the task: one read per
consumer that uses it); for a chunk computed upstream, a reference to the shared key
(no recomputation). :func:`resolve` turns either into the chunk's values. Works with
every dask scheduler (the stored array is a dependency of the consuming task).
"""

from __future__ import annotations

from typing import Any, Hashable

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask._task_spec import Alias, DataNode, GraphNode, List, Task, TaskRef

__all__ = ["ChunkReads", "ChunkRead", "after", "resolve"]


class ChunkRead:
    """One stored chunk, read when called: a task reads only the chunks it turns out to need."""

    __slots__ = ("func", "args", "kwargs")

    def __init__(self, func, args, kwargs):
        self.func, self.args, self.kwargs = func, args, kwargs

    def __call__(self) -> Any:
        return self.func(*self.args, **self.kwargs)


def _deferred(func, *args, **kwargs) -> ChunkRead:
    return ChunkRead(func, args, kwargs)


def after(*_done: Any) -> None:
    """A token task: done when all its arguments are (orders reads, holds nothing)."""
    return None


def resolve(chunk: Any) -> Any:
    """The chunk's values: ``chunk`` itself, or the result of reading it (a :class:`ChunkRead`)."""
    return chunk() if isinstance(chunk, ChunkRead) else chunk


class ChunkReads:
    """Per-chunk graph nodes of one dask array, for tasks built from its chunk keys.

    Parameters
    ----------
    array : dask.array.Array
        Any dask array. Its chunks are read anew inside each consumer when its graph
        layer holds plain getter tasks on stored data (no computed dependency).

    Examples
    --------
    >>> reads = ChunkReads(array)                                 # doctest: +SKIP
    >>> Task(key, use, reads.nodes([(array.name, 0, 0, 0)]))      # doctest: +SKIP
    """

    def __init__(self, array: da.Array):
        self.array = array
        self.name = array.name
        self._graph = array.__dask_graph__()
        self._data: dict[Hashable, bool] = {}
        self._nodes: dict[Hashable, GraphNode] = {}
        self._bounds = [np.concatenate([[0], np.cumsum(c)]).astype(int).tolist() for c in array.chunks]
        layer = getattr(self._graph, "layers", {}).get(self.name)
        self._tasks = getattr(layer, "mapping", None)
        self._template = None
        if self._tasks is None and layer is not None and hasattr(layer, "cull"):
            self._template = self._blockwise_template(layer)

    @property
    def inline(self) -> bool:
        """Whether the chunks of this array are read anew by each consumer."""
        if self._template is not None:
            return True
        if not self._tasks:
            return False
        return self._leaf(self._stored(self._tasks.get((self.name,) + (0,) * self.array.ndim)))

    def node(self, key: tuple) -> GraphNode:
        """The graph node that gives chunk ``key``: a :class:`ChunkRead` (pass the value
        through :func:`resolve`), or a reference to the shared chunk.

        One node per chunk, however many tasks read it (nodes are immutable): a frame's
        chunks are read by several tasks each, and the graph then holds one node, not one
        per reader."""
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = self._new_node(key)
        return node

    def _new_node(self, key: tuple) -> GraphNode:
        if self._template is not None:
            return self._template(key[1:])
        task = self._stored(self._tasks.get(key) if self._tasks is not None else None)
        if self._leaf(task):
            return Task(None, _deferred, task.func, *task.args, **task.kwargs)
        return TaskRef(key)

    def _stored(self, task: Any, depth: int = 8) -> Any:
        """Through aliases to the task they name: a chunk-aligned slice of a stored array
        (``ds.isel(t=...)``, ``a[3:10]``) is a layer of aliases of the stored chunks' keys."""
        while isinstance(task, Alias) and depth > 0:
            target = task.target
            layer = getattr(self._graph, "layers", {}).get(target[0] if isinstance(target, tuple) else target)
            if layer is None:
                return task
            mapping = getattr(layer, "mapping", None)
            if mapping is not None:
                task = mapping.get(target)
            elif hasattr(layer, "cull"):       # an unmaterialised getter layer: this one block
                try:
                    culled, _ = layer.cull({target}, [target])
                    task = culled[target]
                except Exception:  # pragma: no cover - a layer type that cannot cull one key
                    return task
            else:
                return task
            depth -= 1
        return task

    def nodes(self, keys: list) -> List:
        """:meth:`node` of each key, as one list argument of a task."""
        return List(*(self.node(k) for k in keys))

    def _leaf(self, task: Any) -> bool:
        return (isinstance(task, Task) and not task.has_subgraph()
                and all(map(self._is_data, task.dependencies)))

    def _slices(self, index: tuple) -> tuple:
        return tuple(slice(b[i], b[i + 1]) for b, i in zip(self._bounds, index))

    def _blockwise_template(self, layer: Any):
        """For a getter layer that dask keeps unmaterialised (``da.from_zarr``): build the
        read of any block from one sample task, checked against a second one, instead of
        materialising the layer (about 50 us per chunk)."""
        first = (0,) * self.array.ndim
        last = tuple(n - 1 for n in self.array.numblocks)
        try:
            samples = []
            for idx in (first, last):
                key = (self.name,) + idx
                culled, _ = layer.cull({key}, [key])
                samples.append(culled[key])
        except Exception:  # pragma: no cover - a layer type without cull
            return None
        task = samples[0]
        if not self._leaf(task):
            return None
        where = [i for i, a in enumerate(task.args)
                 if isinstance(a, DataNode) and a.value == self._slices(first)]
        if len(where) != 1:
            return None
        pos = where[0]

        def args_of(index: tuple) -> list:
            args = list(task.args)
            args[pos] = DataNode(None, self._slices(index))
            return args

        other = samples[1]
        if other.func is not task.func or (tokenize(tuple(args_of(last)), task.kwargs)
                                           != tokenize(tuple(other.args), other.kwargs)):
            return None

        def make(index: tuple) -> Task:
            return Task(None, _deferred, task.func, *args_of(index), **task.kwargs)

        return make

    def _is_data(self, key: Hashable) -> bool:
        """Whether ``key`` holds stored data (a literal or data node), not a computation."""
        if key not in self._data:
            try:
                value: Any = self._graph[key]
            except KeyError:
                value = None
            legacy_task = isinstance(value, tuple) and bool(value) and callable(value[0])
            self._data[key] = value is not None and (isinstance(value, DataNode) or not (
                isinstance(value, GraphNode) or legacy_task))
        return self._data[key]
