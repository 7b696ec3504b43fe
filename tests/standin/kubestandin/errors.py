"""metav1.Status bodies, shaped like apimachinery's pkg/api/errors constructors."""


class ApiError(Exception):
    """An error answered to the client as a Status object with an HTTP code."""

    def __init__(self, code, reason, message, details=None, retry_after=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def status(self):
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code, reason, message, details=None, success=False):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success" if success else "Failure"}
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _qualified(rd):
    """'leases.coordination.k8s.io' or 'pods' for the core group."""
    return rd.plural + ("." + rd.group if rd.group else "")


def _details(rd, name, **extra):
    d = {}
    if name:
        d["name"] = name
    if rd.group:
        d["group"] = rd.group
    d["kind"] = rd.plural
    d.update(extra)
    return d


def not_found(rd, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (_qualified(rd), name),
                    _details(rd, name))


def not_found_path():
    return ApiError(404, "NotFound", "the server could not find the requested resource",
                    {})


def already_exists(rd, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (_qualified(rd), name),
                    _details(rd, name))


OPTIMISTIC_LOCK_MSG = ("the object has been modified; please apply your changes to the "
                       "latest version and try again")


def conflict(rd, name, err=OPTIMISTIC_LOCK_MSG):
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": %s'
                    % (_qualified(rd), name, err), _details(rd, name))


def invalid(rd, name, causes):
    """causes: list of (field, cause_type, message) — message as field.ErrorList prints it."""
    parts = []
    out = []
    for field, ctype, msg in causes:
        parts.append("%s: %s" % (field, msg) if field else msg)
        out.append({"reason": ctype, "message": msg, "field": field})
    if len(parts) == 1:
        errs = parts[0]
    else:
        errs = "[" + ", ".join(parts) + "]"
    kind = rd.kind + ("." + rd.group if rd.group else "")
    d = {"name": name} if name else {}
    if rd.group:
        d["group"] = rd.group
    d["kind"] = rd.kind
    d["causes"] = out
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (kind, name, errs), d)


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def method_not_allowed():
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource", {})


def unsupported_media_type(accepted):
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: " + ", ".join(accepted))


def unauthorized():
    return ApiError(401, "Unauthorized", "Unauthorized")


def expired(message):
    return ApiError(410, "Expired", message)


def too_many_requests(message, retry_after=1, causes=None):
    details = {"retryAfterSeconds": retry_after} if retry_after else {}
    if causes:
        details["causes"] = causes
    return ApiError(429, "TooManyRequests", message, details, retry_after)


def generic(code, message=None, retry_after=None):
    """A status for an arbitrary code (used by fault injection)."""
    reasons = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
               405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 422: "Invalid",
               429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
               504: "Timeout"}
    defaults = {429: "Too many requests, please try again later.",
                500: "Internal error occurred: injected fault",
                503: "The server is currently unable to handle the request",
                504: "The server was unable to return a response in the time allotted, "
                     "but may still be processing the request"}
    reason = reasons.get(code, "Unknown" if code < 500 else "InternalError")
    msg = message or defaults.get(code, "the server responded with the status code %d" % code)
    details = {"retryAfterSeconds": retry_after} if retry_after is not None else None
    return ApiError(code, reason, msg, details, retry_after)
