"""Stand-in modules generated from a real release's API surface (tests/data/*_api/*.json).

`scripts/trt_api_surface.py` reads every class, property, method signature and enum member of a real
TensorRT (or cuda-python) release and writes it to a fixture. `build_module` turns that fixture into a module
with exactly that surface:

* a name the release lacks is missing here too: `AttributeError`, as from the real bindings;
* every call is bound against the release's signatures (all overloads): a wrong argument count, name or
  type is a `TypeError`, as pybind11 raises for "incompatible function arguments";
* pybind11 enums are strict: a method taking a `BuilderFlag` refuses an int or another enum's member;
* a property without a setter refuses assignment, and objects refuse attributes their class lacks;
* a class with no constructor in the surface cannot be instantiated ("No constructor defined!").

Behaviour comes only from the `behaviours` mapping the caller passes ("Class.member" -> function), each written
where the tests need it and marked with the documented behaviour it mirrors. Reaching anything else raises
`StandInGap`, so a new call in the adapter fails loudly until it is given a behaviour. Every attribute reached
on the module, its classes and their objects is recorded in `module._standin_reached` for the conformance tests.
"""

from __future__ import annotations

import functools
import json
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


class StandInGap(NotImplementedError):
    """The real release has this, but the stand-in was given no behaviour for it."""


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


@functools.cache
def load_surface(kind: str, name: str) -> dict[str, Any]:
    """A fixture, parsed once per session (treat it as read-only)."""
    return json.loads((DATA / f"{kind}_api" / f"{name}.json").read_text())


def surface_names(kind: str) -> list[str]:
    return sorted((p.stem for p in (DATA / f"{kind}_api").glob("*.json")), key=version_key)


# ---------------------------------------------------------------- signatures

@dataclass(frozen=True)
class Param:
    name: str
    kind: str | None  # the annotation as the docstring writes it, None if unannotated
    optional: bool  # has a default


@dataclass(frozen=True)
class Signature:
    text: str
    params: tuple[Param, ...]  # without self
    variadic: bool  # *args/**kwargs: anything binds


def _split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "([<{":
            depth += 1
        elif ch in ")]>}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return [p for p in [*parts, current.strip()] if p]


def parse_signature(text: str, method: bool) -> Signature:
    inside = text[text.index("(") + 1:text.rindex(")")] if "->" not in text else \
        text[text.index("(") + 1:text.rindex(")", 0, text.index("->"))]
    params, variadic = [], False
    for index, raw in enumerate(_split_top(inside)):
        if raw in ("/", "*"):
            continue
        if raw.startswith("*"):
            variadic = True
            continue
        head, _, default = raw.partition("=")
        name, _, kind = head.partition(":")
        if method and index == 0 and name.strip() in ("self", "this", "arg0"):
            continue
        params.append(Param(name.strip(), kind.strip() or None, bool(default.strip())))
    return Signature(text, tuple(params), variadic)


# ---------------------------------------------------------------- enums

class StandInEnumMember:
    """One member of a pybind11 enum: `.name`, `.value`, int(), hashable, equal only to its own kind."""

    __slots__ = ("_enum", "name", "value")

    def __init__(self, enum: type, name: str, value: int):
        object.__setattr__(self, "_enum", enum)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", value)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"can't set attribute {key!r} of an enum member")

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StandInEnumMember) and other._enum is self._enum and other.value == self.value

    def __hash__(self) -> int:
        return hash((self._enum.__name__, self.value))

    def __repr__(self) -> str:
        return f"<{self._enum.__name__}.{self.name}: {self.value}>"


# ---------------------------------------------------------------- classes and objects

class _Recording(type):
    """Records class-level attribute reads (trt.BuilderFlag.FP16) in the module's reached set."""

    def __getattribute__(cls, key: str) -> Any:
        if not key.startswith("_"):
            type.__getattribute__(cls, "_standin_reached").add(f"{type.__getattribute__(cls, '_standin_name')}.{key}")
        return type.__getattribute__(cls, key)


def _own_attribute(obj: Any, key: str) -> bool:
    """Whether `key` is the caller's own: set on the instance, or defined by a Python subclass of a stand-in."""
    if key in object.__getattribute__(obj, "__dict__"):
        return True
    return any(key in klass.__dict__ for klass in type(obj).__mro__
               if "_standin_name" not in klass.__dict__ and klass is not object)


class StandInObject:
    """An object of a generated class: only the surface's attributes exist; state lives in `_state`."""

    _standin_name = "object"
    _standin_reached: set[str] = set()
    _standin_module: Any = None

    def __getattribute__(self, key: str) -> Any:
        if not key.startswith("_") and not _own_attribute(self, key):
            cls = type(self)
            cls._standin_reached.add(f"{cls._standin_name}.{key}")
        return object.__getattribute__(self, key)

    def __setattr__(self, key: str, value: Any) -> None:
        cls = type(self)
        if key.startswith("_standin"):
            object.__setattr__(self, key, value)
            return
        # Looked up in the classes' dicts: reading it off the class would record a read.
        found = (k.__dict__[key] for k in cls.__mro__ if key in k.__dict__)
        prop = next(found, None) if not key.startswith("_") else None
        if not isinstance(prop, property) and "_standin_name" not in cls.__dict__:
            # A Python subclass (an IProfiler written in Python, as pybind11's trampolines allow) has a __dict__.
            object.__setattr__(self, key, value)
            return
        if not isinstance(prop, property):
            raise AttributeError(f"'{cls._standin_name}' object has no attribute '{key}'")
        if prop.fset is None:
            raise AttributeError(f"property '{key}' of '{cls._standin_name}' object has no setter")
        cls._standin_reached.add(f"{cls._standin_name}.{key}=")
        prop.fset(self, value)

    @property
    def _state(self) -> dict[str, Any]:
        return object.__getattribute__(self, "_standin_state")

    def __repr__(self) -> str:
        return f"<stand-in {type(self)._standin_name}>"


def make_object(cls: type, **state: Any) -> Any:
    """An instance without calling the class's constructor (how the library hands out its own objects)."""
    obj = object.__new__(cls)
    object.__setattr__(obj, "_standin_state", dict(state))
    return obj


Behaviour = Callable[..., Any]


class ModuleBuilder:
    """Builds one module from a surface with the given behaviours; see the module docstring."""

    def __init__(self, surface: Mapping[str, Any], module_name: str, behaviours: Mapping[str, Behaviour],
                 context: Any = None):
        self.surface, self.behaviours, self.context = surface, behaviours, context
        self.reached: set[str] = set()
        self.module = _RecordingModule(module_name, self.reached)
        self.classes: dict[str, type] = {}

    # -- type checks (what pybind11 converts implicitly and what it refuses)

    def accepts(self, kind: str | None, value: Any, optional: bool) -> bool:
        if kind is None or value is None and (optional or "None" in kind or "Optional" in kind):
            return True
        kind = kind.replace("typing.", "")
        if kind in ("int", "SupportsInt", "SupportsIndex"):
            return not isinstance(value, (float, str, bytes, StandInEnumMember)) and hasattr(value, "__int__")
        if kind in ("float", "SupportsFloat"):
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "str":
            return isinstance(value, (str, bytes))
        if kind in ("buffer", "typing_extensions.Buffer", "Buffer"):
            try:
                memoryview(value)
            except TypeError:
                return isinstance(value, StandInObject) and hasattr(type(value), "__bytes__")
            return True
        if kind == "Dims" or kind.startswith("Dims") and kind[4:].isdigit():
            dims = self.classes.get("Dims")
            return (dims is not None and isinstance(value, dims)) or (
                isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value))
        if kind in ("tuple", "list"):
            return isinstance(value, (tuple, list))
        if kind in self.classes:
            cls = self.classes[kind]
            if getattr(cls, "_standin_enum", False):
                return isinstance(value, StandInEnumMember) and value._enum is cls
            return isinstance(value, cls)
        return True  # List[int], numpy.ndarray, capsule, object, C++ names: not checked

    def bind(self, owner: str, name: str, signatures: list[Signature], args: tuple, kwargs: dict) -> dict[str, Any]:
        for signature in signatures:
            bound = self._bind_one(signature, args, kwargs)
            if bound is not None:
                return bound
        offered = "\n".join(f"    {i + 1}. {s.text}" for i, s in enumerate(signatures))
        raise TypeError(f"{owner}.{name}(): incompatible function arguments. The following argument types are "
                        f"supported:\n{offered}\nInvoked with: {args!r}, {kwargs!r}")

    def _bind_one(self, signature: Signature, args: tuple, kwargs: dict) -> dict[str, Any] | None:
        if signature.variadic:
            return {"args": args, **kwargs}
        params = signature.params
        if len(args) > len(params):
            return None
        bound = dict(zip((p.name for p in params), args, strict=False))
        for key, value in kwargs.items():
            if key in bound or key not in {p.name for p in params}:
                return None
            bound[key] = value
        for param in params:
            if param.name not in bound:
                if not param.optional:
                    return None
                continue
            if not self.accepts(param.kind, bound[param.name], param.optional):
                return None
        return bound

    # -- generation

    def behaviour(self, class_names: Iterable[str], member: str) -> Behaviour | None:
        for name in class_names:
            found = self.behaviours.get(f"{name}.{member}")
            if found is not None:
                return found
        return None

    def lineage(self, name: str) -> list[str]:
        """The class and its surface bases, nearest first (behaviours of ILayer serve INormalizationLayer)."""
        order, queue = [], [name]
        while queue:
            current = queue.pop(0)
            if current not in order:
                order.append(current)
                queue.extend(self.surface["classes"].get(current, {}).get("bases", []))
        return order

    def method(self, owner: str, member: str, texts: list[str]) -> Callable[..., Any]:
        signatures = [parse_signature(t, method=True) for t in texts] or [Signature("(*args)", (), True)]
        builder = self

        def call(this: Any, *args: Any, **kwargs: Any) -> Any:
            bound = builder.bind(owner, member, signatures, args, kwargs)
            found = builder.behaviour(builder.lineage(type(this)._standin_name), member)
            if found is None:
                raise StandInGap(f"stand-in {owner}.{member} has no behaviour (it exists in the real release)")
            return found(this, builder.context, **bound)

        call.__name__ = member
        return call

    def prop(self, owner: str, member: str, entry: Mapping[str, Any]) -> property:
        builder = self

        def get(this: Any) -> Any:
            found = builder.behaviour(builder.lineage(type(this)._standin_name), member)
            if found is not None:
                return found(this, builder.context)
            if member in this._state:
                return this._state[member]
            raise StandInGap(f"stand-in {owner}.{member} has no behaviour (it exists in the real release)")

        def put(this: Any, value: Any) -> None:
            if not builder.accepts(entry.get("type"), value, optional=False):
                raise TypeError(f"(): incompatible function arguments: {owner}.{member} takes {entry.get('type')}, "
                                f"not {value!r}")
            found = builder.behaviour(builder.lineage(type(this)._standin_name), f"{member}=")
            if found is not None:
                found(this, builder.context, value)
            else:
                this._state[member] = value

        return property(get, put if entry.get("settable") else None)

    def build(self) -> types.ModuleType:
        classes = self.surface["classes"]
        for name in sorted(classes):
            self._ensure_class(name)
        for name, entry in classes.items():
            cls = self.classes[name]
            for key, value in entry.get("values", {}).items():
                type.__setattr__(cls, key, self.value(value))
            for key, target in entry.get("nested", {}).items():
                type.__setattr__(cls, key, self.classes[target])
        for name, cls in self.classes.items():
            if "." not in name:
                setattr(self.module, name, cls)
        for key, value in self.surface.get("values", {}).items():
            setattr(self.module, key, self.value(value))
        for key, texts in self.surface.get("functions", {}).items():
            setattr(self.module, key, self._function(key, texts))
        self.reached.clear()  # what building the module read is not what its user reached
        return self.module

    def _ensure_class(self, name: str) -> type:
        """The class, made after its bases (a subclass must inherit what the surface lists on its base)."""
        if name not in self.classes:
            for base in self.surface["classes"][name].get("bases", []):
                self._ensure_class(base)
            self.classes[name] = self._make_class(name, self.surface["classes"][name])
        return self.classes[name]

    def value(self, entry: Mapping[str, Any]) -> Any:
        if "enum" in entry:
            return type.__getattribute__(self.classes[entry["enum"]], entry["member"])
        return entry["constant"]

    def _function(self, name: str, texts: list[str]) -> Callable[..., Any]:
        signatures = [parse_signature(t, method=False) for t in texts] or [Signature("(*args)", (), True)]
        builder = self

        def call(*args: Any, **kwargs: Any) -> Any:
            bound = builder.bind("module", name, signatures, args, kwargs)
            found = builder.behaviours.get(name)
            if found is None:
                raise StandInGap(f"stand-in function {name} has no behaviour (it exists in the real release)")
            return found(builder.context, **bound)

        call.__name__ = name
        return call

    def _make_class(self, name: str, entry: Mapping[str, Any]) -> type:
        short = name.rpartition(".")[2]
        namespace: dict[str, Any] = {"_standin_name": name, "_standin_reached": self.reached,
                                     "_standin_module": self.module, "__qualname__": name}
        if entry["kind"] == "enum":
            namespace["_standin_enum"] = True
            cls = _Recording(short, (), namespace)
            members = {key: StandInEnumMember(cls, key, value) for key, value in entry["members"].items()}
            for key, member in members.items():
                type.__setattr__(cls, key, member)
            type.__setattr__(cls, "__members__", members)
            return cls
        for key, prop_entry in entry.get("properties", {}).items():
            namespace[key] = self.prop(name, key, prop_entry)
        methods = entry.get("methods", {})
        for key, texts in methods.items():
            namespace[key] = self.method(name, key, texts)
        if "__init__" not in methods and not any("__init__" in self.surface["classes"].get(b, {}).get("methods", {})
                                                 for b in self.lineage(name)[1:]):
            namespace["__init__"] = _no_constructor(name)
        else:
            namespace["__init__"] = self._constructor(name, namespace.get("__init__"))
        bases = tuple(self.classes[b] for b in entry.get("bases", []) if b in self.classes) or (StandInObject,)
        return _Recording(short, bases, namespace)

    def _constructor(self, name: str, declared: Callable[..., Any] | None) -> Callable[..., None]:
        builder = self

        def init(this: Any, *args: Any, **kwargs: Any) -> None:
            object.__setattr__(this, "_standin_state", {})
            texts = builder.surface["classes"][builder._declaring(name, "__init__")]["methods"]["__init__"]
            bound = builder.bind(name, "__init__", [parse_signature(t, method=True) for t in texts], args, kwargs)
            found = builder.behaviour(builder.lineage(type(this)._standin_name), "__init__")
            if found is None:
                raise StandInGap(f"stand-in {name}() has no behaviour (it exists in the real release)")
            found(this, builder.context, **bound)

        return init

    def _declaring(self, name: str, member: str) -> str:
        return next(c for c in self.lineage(name) if member in self.surface["classes"].get(c, {}).get("methods", {}))


def _no_constructor(name: str) -> Callable[..., None]:
    def init(this: Any, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"tensorrt.{name}: No constructor defined!")

    return init


class _RecordingModule(types.ModuleType):
    """A module that records every public attribute read (trt.Builder, trt.float32, trt.nptype)."""

    def __init__(self, name: str, reached: set[str]):
        super().__init__(name)
        object.__setattr__(self, "_standin_reached", reached)

    def __getattribute__(self, key: str) -> Any:
        if not key.startswith("_"):
            object.__getattribute__(self, "_standin_reached").add(f"{object.__getattribute__(self, '__name__')}.{key}")
        return super().__getattribute__(key)
