"""BrazeSandbox: a stateful emulator of Braze ``POST /users/track``."""

from __future__ import annotations

import sys
from typing import Any

from sandbox.braze_export import DOWNLOAD_PREFIX, EXPORT_PATH, SegmentExports
from sandbox.server import EmulatorServer, RecordedRequest, Response, json_response

PRIMARY_IDS = ("external_id", "braze_id", "user_alias")
ARRAYS = ("attributes", "events", "purchases")
CONTROL_KEYS = frozenset({"_update_existing_only"})
# Braze bills no data points for subscription state changes (data_points.md).
FREE_KEYS = frozenset({"email_subscribe", "push_subscribe", "subscription_groups"})
MAX_STRING = 255
ADD_REMOVE = frozenset({"add", "remove"})

NO_DATA_MESSAGE = (
    "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
)
MISSING_ID = "Attributes must have one of external_id, braze_id, user_alias, email or phone"
MULTIPLE_IDS = "Only one of external_id, braze_id or user_alias may identify an object"


class _ObjectError(Exception):
    """A per-object error: reported in the 201's ``errors`` list, object not applied."""


def _alias_key(alias: Any) -> str:
    if (
        not isinstance(alias, dict)
        or not isinstance(alias.get("alias_name"), str)
        or not isinstance(alias.get("alias_label"), str)
        or not alias["alias_name"]
        or not alias["alias_label"]
    ):
        raise _ObjectError("user_alias must be an object with alias_name and alias_label")
    return f"alias:{alias['alias_label']}:{alias['alias_name']}"


def _add_unique(arr: list[Any], add: Any) -> list[Any]:
    """Append values; a value already present moves to the end (never duplicated).

    String values are interned: a million users sharing a few segment slugs then share
    the same string objects instead of one copy each.
    """
    for v in add:
        if type(v) is str:
            v = sys.intern(v)
        if v in arr:
            arr.remove(v)
        arr.append(v)
    return arr


def _check_string(key: str, value: Any) -> None:
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise _ObjectError(f"'{key}' is longer than {MAX_STRING} characters")


class BrazeSandbox(EmulatorServer):
    """Emulates Braze ``/users/track`` with users held in memory (one dict per user).

    Users are keyed by external_id; users created through another identifier are keyed
    ``braze_id:<id>``, ``email:<e>``, ``phone:<p>`` or ``alias:<label>:<name>``.
    """

    name = "braze-sandbox"

    def __init__(
        self,
        api_key: str = "sandbox-braze-key",
        max_array_length: int = 500,
        max_objects: int = 75,
        host: str = "127.0.0.1",
        port: int = 0,
        max_objects_status: int = 400,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.max_array_length = max_array_length
        self.max_objects = max_objects
        # Status of a request over `max_objects` (Braze documents 400 "Max Input Length
        # Exceeded" for over 75; what a 50-object MAU contract answers is undocumented).
        self.max_objects_status = max_objects_status
        self._queued_next = 0
        self._refuse: dict[str, tuple[int, str]] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._email_index: dict[str, str] = {}
        self._phone_index: dict[str, str] = {}
        self._rejects: dict[str, str] = {}
        self._events: list[dict[str, Any]] = []
        self._purchases: list[dict[str, Any]] = []
        self.stats.update(
            {
                "accepted_requests": 0,
                "objects": 0,
                "data_points": 0,
                "errors": 0,
                "users_created": 0,
                "events": 0,
                "purchases": 0,
                "queued": 0,
                "exports": 0,
                "export_downloads": 0,
            }
        )
        #: ``POST /users/export/segment`` state and knobs (segments, delay, bucket).
        self.segment_exports = SegmentExports(self)
        self.add_admin_route("GET", "users", self._admin_get_users)
        self.add_admin_route("POST", "segments", self._admin_add_segment)
        self.add_admin_route("POST", "export_settings", self._admin_export_settings)
        self.add_admin_route("POST", "users", self._admin_add_users)
        self.add_admin_route("POST", "reject", self._admin_reject)
        self.add_admin_route("POST", "queue_next", self._admin_queue_next)
        self.add_admin_route("POST", "refuse_requests", self._admin_refuse_requests)
        self.add_admin_route("POST", "limits", self._admin_limits)

    # ---- Python API ------------------------------------------------------------------
    def users(self) -> dict[str, dict[str, Any]]:
        """Every user's attributes (copies), keyed as described in the class docstring."""
        with self.lock:
            return {key: self._copy(attrs) for key, attrs in self._users.items()}

    def user(self, external_id: str) -> dict[str, Any] | None:
        """One user's attributes (a copy) or None."""
        with self.lock:
            attrs = self._users.get(external_id)
            return None if attrs is None else self._copy(attrs)

    def user_count(self) -> int:
        """Return the number of users held."""
        with self.lock:
            return len(self._users)

    def add_user(self, external_id: str, **attributes: Any) -> None:
        """Create (or overwrite) a pre-existing profile."""
        with self.lock:
            attrs: dict[str, Any] = {"external_id": external_id}
            attrs.update(attributes)
            self._users[external_id] = attrs
            self._index(external_id, attrs)

    def add_segment(self, segment_id: str, external_ids: list[str] | None = None) -> None:
        """Define a segment for ``/users/export/segment``: these users, or everyone (None)."""
        with self.lock:
            self.segment_exports.add_segment(segment_id, external_ids)

    def stop(self) -> None:
        """Stop serving; pending bucket writes of exports are cancelled."""
        self.segment_exports.stop()
        super().stop()

    def remove_user(self, external_id: str) -> None:
        """Delete a profile (as the Braze dashboard or /users/delete would)."""
        with self.lock:
            self._users.pop(external_id, None)

    def reject(self, ids: dict[str, str]) -> None:
        """Refuse objects for these external_ids with the given reason; ``{}`` clears all."""
        with self.lock:
            if not ids:
                self._rejects.clear()
            else:
                self._rejects.update(ids)

    def unreject(self, *external_ids: str) -> None:
        """Stop refusing these external_ids."""
        with self.lock:
            for ext in external_ids:
                self._rejects.pop(ext, None)

    def queue_next(self, n: int = 1) -> None:
        """Answer the next ``n`` /users/track requests 202 ``{"message": "queued"}``.

        The request is still applied (Braze queues it during maintenance and processes it
        later); per-object errors are not reported, as Braze has not processed it yet.
        """
        with self.lock:
            self._queued_next = max(0, int(n))

    def refuse_requests_with(self, ids: dict[str, str], status: int = 400) -> None:
        """Refuse, without per-object detail, every request carrying one of these ids.

        The whole request is answered ``status`` with ``{"message": reason}`` and nothing
        of it is applied; ``{}`` clears. Models a 400/413 whose cause Braze does not name.
        """
        with self.lock:
            if not ids:
                self._refuse.clear()
            else:
                self._refuse.update({k: (int(status), v) for k, v in ids.items()})

    def events(self) -> list[dict[str, Any]]:
        """Event objects accepted so far (copies)."""
        with self.lock:
            return [dict(e) for e in self._events]

    def purchases(self) -> list[dict[str, Any]]:
        """Purchase objects accepted so far (copies)."""
        with self.lock:
            return [dict(p) for p in self._purchases]

    @staticmethod
    def _copy(attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in attrs.items()}

    def _index(self, key: str, attrs: dict[str, Any]) -> None:
        email = attrs.get("email")
        if isinstance(email, str):
            self._email_index[email] = key
        phone = attrs.get("phone")
        if isinstance(phone, str):
            self._phone_index[phone] = key

    # ---- HTTP ------------------------------------------------------------------------
    def authenticate(self, req: RecordedRequest) -> Response | None:
        """Require ``Authorization: Bearer <api_key>``; never echo what was sent.

        Export download URLs are presigned (their signature is in the query string), so they
        take no key, as S3 presigned URLs do.
        """
        if req.path.startswith(DOWNLOAD_PREFIX):
            return None
        if req.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error(401, "Invalid API key: the REST API key is missing or not valid")
        return None

    def decorate(self, req: RecordedRequest, resp: Response) -> Response:
        """Every response carries X-RateLimit-Limit/Remaining/Reset."""
        limit, remaining, reset = self.rate_limit_state()
        resp[2]["X-RateLimit-Limit"] = str(limit)
        resp[2]["X-RateLimit-Remaining"] = str(remaining)
        resp[2]["X-RateLimit-Reset"] = str(reset)
        return resp

    def route(self, req: RecordedRequest) -> Response:
        """Dispatch ``/users/track``, ``/users/export/segment`` and export downloads."""
        if req.path.startswith(DOWNLOAD_PREFIX):
            return self.segment_exports.handle_download(req)
        if req.path.rstrip("/") == EXPORT_PATH:
            if req.method != "POST":
                return self.error(405, "Method Not Allowed")
            return self.segment_exports.handle_export(req)
        if req.path.rstrip("/") != "/users/track":
            return self.error(404, "Not Found")
        if req.method != "POST":
            return self.error(405, "Method Not Allowed")
        return self._track(req)

    def _track(self, req: RecordedRequest) -> Response:
        body = req.json
        if not isinstance(body, dict) or not any(body.get(a) for a in ARRAYS):
            return self.error(400, NO_DATA_MESSAGE)
        for array in ARRAYS:
            items = body.get(array)
            if items is None:
                continue
            if not isinstance(items, list):
                return self.error(400, NO_DATA_MESSAGE)
            if len(items) > self.max_objects:
                return self.error(self.max_objects_status, "Max Input Length Exceeded")
        if self._refuse:
            for array in ARRAYS:
                for obj in body.get(array) or ():
                    ext = obj.get("external_id") if type(obj) is dict else None
                    hit = self._refuse.get(ext) if isinstance(ext, str) else None
                    if hit is not None:
                        return self.error(hit[0], hit[1])
        errors: list[dict[str, Any]] = []
        processed = {}
        for array in ARRAYS:
            items = body.get(array) or []
            ok = 0
            for index, obj in enumerate(items):
                try:
                    self._apply(array, obj)
                    ok += 1
                except _ObjectError as exc:
                    errors.append({"type": str(exc), "input_array": array, "index": index})
            processed[array] = ok
        self.stats["errors"] += len(errors)
        if errors and not any(processed.values()):
            # No object was valid: Braze answers 400 with the per-object errors (the Braze
            # destination tests of segmentio/action-destinations and rudder-transformer).
            return json_response(400, {"message": NO_DATA_MESSAGE, "errors": errors})
        self.stats["accepted_requests"] += 1
        if self._queued_next > 0:
            self._queued_next -= 1
            self.stats["queued"] += 1
            return json_response(202, {"message": "queued"})
        out: dict[str, Any] = {
            "message": "success",
            "attributes_processed": processed["attributes"],
            "events_processed": processed["events"],
            "purchases_processed": processed["purchases"],
        }
        if errors:
            out["errors"] = errors
        return json_response(201, out)

    def _resolve(self, obj: dict[str, Any]) -> tuple[str, str, bool]:
        """(user key, identifying field, update-only default) for an object."""
        present = [k for k in PRIMARY_IDS if k in obj]
        if len(present) > 1:
            raise _ObjectError(MULTIPLE_IDS)
        if present:
            field = present[0]
            value = obj[field]
            if field == "user_alias":
                return _alias_key(value), field, True
            if not isinstance(value, str) or not value:
                raise _ObjectError(f"{field} must be a non-empty string")
            key = value if field == "external_id" else f"braze_id:{value}"
            if field == "external_id" and value in self._rejects:
                raise _ObjectError(self._rejects[value])
            return key, field, False
        for field, index in (("email", self._email_index), ("phone", self._phone_index)):
            value = obj.get(field)
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                raise _ObjectError(f"{field} must be a non-empty string")
            return index.get(value, f"{field}:{value}"), field, False
        raise _ObjectError(MISSING_ID)

    def _apply(self, array: str, obj: Any) -> None:
        if type(obj) is not dict:
            raise _ObjectError("object must be a JSON object")
        ext = obj.get("external_id")
        if ext is not None and "braze_id" not in obj and "user_alias" not in obj:
            # fast path: the common external_id-only object
            if type(ext) is not str or not ext:
                raise _ObjectError("external_id must be a non-empty string")
            key, id_field, update_only_default = ext, "external_id", False
        else:
            key, id_field, update_only_default = self._resolve(obj)
        if self._rejects and key in self._rejects:
            raise _ObjectError(self._rejects[key])
        update_only = obj.get("_update_existing_only", update_only_default)
        if type(update_only) is not bool:
            raise _ObjectError("_update_existing_only must be a boolean")
        if array == "attributes":
            points = self._check_attributes(obj, id_field)
        else:
            required = ("name", "time") if array == "events" else ("product_id", "price", "time")
            missing = [f for f in required if f not in obj]
            if missing:
                raise _ObjectError(f"{array[:-1]} is missing {', '.join(missing)}")
            points = 1
        user = self._users.get(key)
        if user is None:
            if update_only:
                return  # Braze silently skips unknown users in update-only mode
            user = self._new_user(key, id_field, obj)
        if array == "attributes":
            self._apply_attributes(user, obj, id_field)
            if "email" in obj or "phone" in obj:
                self._index(key, user)
            self.stats["objects"] += 1
        else:
            self.stats[array] += 1
            (self._events if array == "events" else self._purchases).append(dict(obj))
        self.stats["data_points"] += points

    def _new_user(self, key: str, id_field: str, obj: dict[str, Any]) -> dict[str, Any]:
        user: dict[str, Any]
        if id_field == "user_alias":
            alias = obj["user_alias"]
            user = {
                "user_aliases": [
                    {"alias_name": alias["alias_name"], "alias_label": alias["alias_label"]}
                ]
            }
        else:
            user = {id_field: obj[id_field]}
        self._users[key] = user
        self.stats["users_created"] += 1
        return user

    @staticmethod
    def _check_attributes(obj: dict[str, Any], id_field: str) -> int:
        """Validate the whole object before anything is applied; returns its data points."""
        points = 0
        for key, value in obj.items():
            if key == id_field or key == "_update_existing_only":
                continue
            kind = type(value)
            if kind is str:
                if len(value) > MAX_STRING:
                    raise _ObjectError(f"'{key}' is longer than {MAX_STRING} characters")
                cost = 1
            elif value is None:
                if key in PRIMARY_IDS:
                    raise _ObjectError(f"{key} cannot be removed")
                cost = 1
            elif kind is dict and value and value.keys() <= ADD_REMOVE:
                add = value.get("add") or []
                remove = value.get("remove") or []
                if type(add) is not list or type(remove) is not list:
                    raise _ObjectError(f"'{key}' add/remove must be arrays")
                for item in add:
                    _check_string(key, item)
                for item in remove:
                    _check_string(key, item)
                cost = len(add) + len(remove)
            elif kind is list:
                for item in value:
                    _check_string(key, item)
                cost = 1
            else:
                cost = 1
            if key not in FREE_KEYS:
                points += cost
        return points

    def _apply_attributes(self, user: dict[str, Any], obj: dict[str, Any], id_field: str) -> None:
        cap = self.max_array_length
        for key, value in obj.items():
            if key == id_field or key == "_update_existing_only":
                continue
            kind = type(value)
            if value is None:
                user.pop(key, None)
            elif kind is dict and value and value.keys() <= ADD_REMOVE:
                current = user.get(key)
                arr = list(current) if type(current) is list else []
                remove = value.get("remove")
                if remove:
                    arr = [v for v in arr if v not in remove]
                arr = _add_unique(arr, value.get("add") or ())
                user[key] = arr[-cap:] if cap and len(arr) > cap else arr
            elif kind is list:
                arr = _add_unique([], value)
                user[key] = arr[-cap:] if cap and len(arr) > cap else arr
            else:
                user[key] = value

    # ---- admin routes ----------------------------------------------------------------
    def _admin_get_users(self, req: RecordedRequest) -> Response:
        return json_response(200, self.users())

    def _admin_add_users(self, req: RecordedRequest) -> Response:
        data = req.json
        users = data.get("users", data) if isinstance(data, dict) else data
        added = 0
        if isinstance(users, dict):
            for ext, attrs in users.items():
                self.add_user(ext, **(attrs or {}))
                added += 1
        elif isinstance(users, list):
            for attrs in users:
                attrs = dict(attrs)
                self.add_user(str(attrs.pop("external_id")), **attrs)
                added += 1
        else:
            raise ValueError("expected {'users': {external_id: {...}}} or a list of users")
        return json_response(200, {"ok": True, "added": added})

    def _admin_queue_next(self, req: RecordedRequest) -> Response:
        self.queue_next(int(self.admin_body(req).get("n", 1)))
        return json_response(200, {"ok": True, "queued_next": self._queued_next})

    def _admin_refuse_requests(self, req: RecordedRequest) -> Response:
        data = self.admin_body(req)
        ids = data.get("ids", {})
        if not isinstance(ids, dict):
            raise ValueError("ids must be an object {external_id: message}")
        self.refuse_requests_with(
            {str(k): str(v) for k, v in ids.items()}, int(data.get("status", 400))
        )
        return json_response(200, {"ok": True, "refused": sorted(self._refuse)})

    def _admin_limits(self, req: RecordedRequest) -> Response:
        data = self.admin_body(req)
        for key in ("max_objects", "max_array_length", "max_objects_status"):
            if data.get(key) is not None:
                setattr(self, key, int(data[key]))
        return json_response(
            200,
            {
                "ok": True,
                "max_objects": self.max_objects,
                "max_array_length": self.max_array_length,
                "max_objects_status": self.max_objects_status,
            },
        )

    def _admin_add_segment(self, req: RecordedRequest) -> Response:
        data = self.admin_body(req)
        segment_id = data.get("segment_id")
        if not isinstance(segment_id, str) or not segment_id:
            raise ValueError("segment_id (a string) is required")
        ids = data.get("external_ids")
        if ids is not None and not isinstance(ids, list):
            raise ValueError("external_ids must be a list (or null for every user)")
        self.add_segment(segment_id, None if ids is None else [str(i) for i in ids])
        return json_response(200, {"ok": True, "segment_id": segment_id})

    def _admin_export_settings(self, req: RecordedRequest) -> Response:
        data = self.admin_body(req)
        exports = self.segment_exports
        if "delay" in data:
            exports.delay = float(data["delay"])
        if "users_per_file" in data:
            exports.users_per_file = int(data["users_per_file"])
        if "url_ttl" in data:
            exports.url_ttl = float(data["url_ttl"])
        if "bucket" in data:
            exports.bucket = data["bucket"] or None
        if "storage_options" in data:
            exports.storage_options = dict(data["storage_options"] or {})
        return json_response(
            200,
            {
                "ok": True,
                "delay": exports.delay,
                "users_per_file": exports.users_per_file,
                "url_ttl": exports.url_ttl,
                "bucket": exports.bucket,
            },
        )

    def _admin_reject(self, req: RecordedRequest) -> Response:
        ids = self.admin_body(req).get("ids", {})
        if not isinstance(ids, dict):
            raise ValueError("ids must be an object {external_id: reason}")
        self.reject({str(k): str(v) for k, v in ids.items()})
        return json_response(200, {"ok": True, "rejected": sorted(self._rejects)})
