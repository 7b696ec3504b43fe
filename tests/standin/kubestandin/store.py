"""Object storage, the resourceVersion counter, the event history and watchers.

One global counter plays etcd's revision: every write takes the next value,
and that value becomes the object's metadata.resourceVersion.  Every write
is also appended to a bounded history; a watch may start from any RV that
is not older than the history (otherwise: 410 Expired), like the API
server's watch cache.  After a restart the history starts empty, so older
RVs are expired, as on a real API server restart.

Stored objects are never modified in place: writers commit fresh copies, so
readers may hold references without locking.

Persistence (optional, with a state directory): each commit is appended to
journal.jsonl before the write is answered; snapshot.json holds the whole
state and is replaced atomically (write, fsync, rename) on shutdown and when
the journal grows.  A process killed at any point restarts from the
snapshot plus the complete lines of the journal.
"""

import collections
import json
import os
import threading
import time


class Event:
    __slots__ = ("rv", "key", "type", "obj", "old")

    def __init__(self, rv, key, type_, obj, old):
        self.rv = rv
        self.key = key          # storage key of the resource ("group/plural")
        self.type = type_       # ADDED, MODIFIED or DELETED
        self.obj = obj          # the object after the change (the last state for DELETED)
        self.old = old          # the object before the change (None for ADDED)


class Watcher:
    """The store side of one watch: a queue of raw events for one resource."""

    def __init__(self, key, namespace):
        self.key = key
        self.namespace = namespace
        self.queue = collections.deque()
        self.closed = None      # None, or why the watch must end: "drop", "reset", "stop"
        self.info = {}


class TooOld(Exception):
    def __init__(self, requested, oldest):
        super().__init__("too old resource version: %d (%d)" % (requested, oldest))


class Store:
    SNAPSHOT_EVERY = 2000   # journal lines between snapshots

    def __init__(self, state_dir=None, history_size=10000):
        self.cond = threading.Condition(threading.RLock())
        self.rv = 1
        self.objects = {}               # key -> {(namespace, name): obj}
        self.history = collections.deque()
        self.history_size = history_size
        self.compacted_rv = 1           # events with rv <= compacted_rv are gone
        self.watchers = set()
        self.stopping = False
        self.state_dir = state_dir
        self._journal = None
        self._journal_lines = 0
        if state_dir:
            os.makedirs(state_dir, exist_ok=True)
            self._load()
            self._journal = open(os.path.join(state_dir, "journal.jsonl"), "a")

    # ------------------------------------------------------------- reading

    def get(self, key, namespace, name):
        with self.cond:
            return self.objects.get(key, {}).get((namespace or "", name))

    def list(self, key, namespace=None):
        """(objects sorted by namespace/name, current rv)."""
        with self.cond:
            objs = self.objects.get(key, {})
            items = [o for (ns, _), o in objs.items() if namespace is None or ns == namespace]
            rv = self.rv
        items.sort(key=lambda o: ((o["metadata"].get("namespace") or ""), o["metadata"]["name"]))
        return items, rv

    def keys(self):
        with self.cond:
            return list(self.objects)

    # ------------------------------------------------------------- writing

    def next_rv(self):
        """Reserve the RV the next commit will use (called under self.cond)."""
        return self.rv + 1

    def commit(self, key, type_, obj, old):
        """Store obj (ADDED/MODIFIED) or remove it (DELETED); obj must already
        carry metadata.resourceVersion == str(self.rv + 1).  Caller holds self.cond."""
        self.rv += 1
        assert obj["metadata"]["resourceVersion"] == str(self.rv)
        md = obj["metadata"]
        ident = (md.get("namespace") or "", md["name"])
        bucket = self.objects.setdefault(key, {})
        if type_ == "DELETED":
            bucket.pop(ident, None)
        else:
            bucket[ident] = obj
        ev = Event(self.rv, key, type_, obj, old)
        self.history.append(ev)
        while len(self.history) > self.history_size:
            self.compacted_rv = self.history.popleft().rv
        for w in self.watchers:
            if w.key == key and (w.namespace is None or w.namespace == ident[0]):
                w.queue.append(ev)
        self._log(ev)
        self.cond.notify_all()
        return ev

    def compact(self):
        """Forget all history: every RV older than the current one is expired."""
        with self.cond:
            self.history.clear()
            self.compacted_rv = self.rv

    def set_history_size(self, n):
        with self.cond:
            self.history_size = max(0, int(n))
            while len(self.history) > self.history_size:
                self.compacted_rv = self.history.popleft().rv

    # ------------------------------------------------------------- watching

    def watch(self, key, namespace, since_rv):
        """Register a watcher.  since_rv None: start now (the caller sends the
        initial state).  Otherwise replay history after since_rv; raises TooOld.
        Returns (watcher, initial objects or None, rv)."""
        with self.cond:
            w = Watcher(key, namespace)
            if since_rv is None:
                objs = [o for (ns, _), o in self.objects.get(key, {}).items()
                        if namespace is None or ns == namespace]
                objs.sort(key=lambda o: int(o["metadata"]["resourceVersion"]))
                self.watchers.add(w)
                return w, objs, self.rv
            if since_rv < self.compacted_rv:
                raise TooOld(since_rv, self.compacted_rv)
            for ev in self.history:
                if ev.rv > since_rv and ev.key == key and (
                        namespace is None or (ev.obj["metadata"].get("namespace") or "")
                        == namespace):
                    w.queue.append(ev)
            self.watchers.add(w)
            return w, None, self.rv

    def unwatch(self, w):
        with self.cond:
            self.watchers.discard(w)

    def close_watchers(self, why):
        with self.cond:
            for w in self.watchers:
                w.closed = why
            self.cond.notify_all()

    def wait_for_rv(self, rv, timeout):
        """Wait until the store has reached rv; False on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.rv < rv:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def stop(self):
        with self.cond:
            self.stopping = True
            for w in self.watchers:
                w.closed = "stop"
            self.cond.notify_all()

    # ---------------------------------------------------------- persistence

    def _log(self, ev):
        if self._journal is None:
            return
        md = ev.obj["metadata"]
        line = {"rv": ev.rv, "key": ev.key, "type": ev.type, "ns": md.get("namespace") or "",
                "name": md["name"]}
        if ev.type != "DELETED":
            line["obj"] = ev.obj
        self._journal.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._journal.flush()
        self._journal_lines += 1
        if self._journal_lines >= self.SNAPSHOT_EVERY:
            self.snapshot()

    def snapshot(self):
        if not self.state_dir:
            return
        with self.cond:
            state = {"rv": self.rv,
                     "objects": [[k, o] for k, b in sorted(self.objects.items())
                                 for o in b.values()]}
            path = os.path.join(self.state_dir, "snapshot.json")
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(state, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
            if self._journal is not None:
                self._journal.close()
            self._journal = open(os.path.join(self.state_dir, "journal.jsonl"), "w")
            self._journal_lines = 0

    def _load(self):
        path = os.path.join(self.state_dir, "snapshot.json")
        if os.path.exists(path):
            with open(path) as f:
                state = json.load(f)
            self.rv = state["rv"]
            for key, obj in state["objects"]:
                md = obj["metadata"]
                self.objects.setdefault(key, {})[(md.get("namespace") or "", md["name"])] = obj
        jpath = os.path.join(self.state_dir, "journal.jsonl")
        if os.path.exists(jpath):
            with open(jpath) as f:
                for raw in f:
                    if not raw.endswith("\n"):
                        break           # a write cut short by a crash
                    line = json.loads(raw)
                    if line["rv"] <= self.rv:
                        continue
                    self.rv = line["rv"]
                    bucket = self.objects.setdefault(line["key"], {})
                    if line["type"] == "DELETED":
                        bucket.pop((line["ns"], line["name"]), None)
                    else:
                        bucket[(line["ns"], line["name"])] = line["obj"]
        self.compacted_rv = self.rv

    def close(self):
        self.snapshot()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
