"""Fault injection and the request log (driven through /_standin/…).

Fault rules (JSON objects; "count" = how many matching requests it affects,
absent or null = until cleared; "path" = a regex searched in the path plus
query; "method" = exact HTTP method):

  {"type": "error", "code": 503, "count": 2, "retryAfterSeconds": 1,
   "message": "...", "path": "/pods", "method": "GET"}
      answer matching requests with this Status code (5xx, 429, 403 …).
  {"type": "latency", "seconds": 0.5, "count": 3, "path": "..."}
      delay matching requests before handling them.
  {"type": "expire", "count": 1, "path": "..."}
      the next list with a resourceVersion (other than "" and "0") answers
      HTTP 410 Expired; the next such watch gets the ERROR 410 event.
Actions (applied at once, not stored):
  {"type": "drop-watches", "mode": "reset"|"close"}
      end every open watch: "reset" cuts the connection without the final
      chunk, "close" ends the stream cleanly like timeoutSeconds.
  {"type": "compact"}   forget the watch history (every older RV expires).
"""

import re
import threading
import time


class Rule:
    def __init__(self, spec):
        self.spec = dict(spec)
        self.type = spec.get("type")
        if self.type not in ("error", "latency", "expire"):
            raise ValueError("unknown fault type %r" % self.type)
        self.count = spec.get("count")
        self.path = re.compile(spec["path"]) if spec.get("path") else None
        self.method = spec.get("method")
        self.hits = 0

    def matches(self, method, target):
        if self.method and self.method.upper() != method:
            return False
        if self.path and not self.path.search(target):
            return False
        return True

    def take(self):
        """Consume one use; False once exhausted."""
        if self.count is not None and self.hits >= self.count:
            return False
        self.hits += 1
        return True

    def exhausted(self):
        return self.count is not None and self.hits >= self.count

    def as_dict(self):
        d = dict(self.spec)
        d["hits"] = self.hits
        return d


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []

    def add(self, spec):
        rule = Rule(spec)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self):
        with self.lock:
            self.rules = []

    def list(self):
        with self.lock:
            return [r.as_dict() for r in self.rules]

    def _take(self, kind, method, target):
        with self.lock:
            for r in self.rules:
                if r.type == kind and r.matches(method, target) and r.take():
                    self.rules = [x for x in self.rules if not x.exhausted()]
                    return r
        return None

    def error_for(self, method, target):
        return self._take("error", method, target)

    def latency_for(self, method, target):
        r = self._take("latency", method, target)
        return float(r.spec.get("seconds", 0)) if r else 0.0

    def expire_for(self, method, target):
        return self._take("expire", method, target) is not None


class RequestLog:
    """Every API request: method, path, query, user, code — for tests to count."""

    def __init__(self, limit=100000):
        self.lock = threading.Lock()
        self.items = []
        self.limit = limit
        self.seq = 0

    def add(self, method, path, query, user, code, user_agent, watch):
        with self.lock:
            self.seq += 1
            self.items.append({"seq": self.seq, "time": time.time(), "method": method,
                               "path": path, "query": query, "user": user, "code": code,
                               "userAgent": user_agent, "watch": watch})
            if len(self.items) > self.limit:
                del self.items[: len(self.items) - self.limit]

    def list(self, since=0):
        with self.lock:
            return [i for i in self.items if i["seq"] > since]

    def clear(self):
        with self.lock:
            self.items = []
