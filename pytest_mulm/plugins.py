"""The ``mulm`` plugin manager, the registries it fills, and lazy plugin loading.

Built-ins are listed in :data:`DEFAULT_PLUGINS` and registered with the same call as
third-party plugins from the ``mulm`` entry point group. ``MULM_LOAD_PLUGINS`` (a comma
list of entry point names, possibly empty) restricts which external plugins load.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownFormatError

if TYPE_CHECKING:
    from .blocks import BlockType
    from .exporter import Exporter

__all__ = ["DEFAULT_PLUGINS", "Registry", "get_plugin_manager", "get_registry", "reset"]

DEFAULT_PLUGINS = (
    "pytest_mulm.builtin_blocks",
    "pytest_mulm.exporters.python_package",
    "pytest_mulm.exporters.fastapi_service",
    "pytest_mulm.exporters.edge_deployment",
    "pytest_mulm.exporters.jupyter_notebook",
    "pytest_mulm.exporters.huggingface_space",
    "pytest_mulm.security",
)

_pm: pluggy.PluginManager | None = None
_registry: Registry | None = None


@dataclass
class Registry:
    exporters: dict[str, Exporter] = field(default_factory=dict)
    block_types: dict[str, BlockType] = field(default_factory=dict)
    suites: dict[str, list[str]] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # "exporter:name" -> plugin name

    def formats(self) -> list[str]:
        return sorted(self.exporters)

    def exporter(self, name: str) -> Exporter:
        try:
            return self.exporters[name]
        except KeyError:
            raise UnknownFormatError([name], self.formats()) from None

    def resolve_formats(self, spec: str | list[str]) -> list[str]:
        """``"all"`` or a comma list → registered format names, in the order given."""
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        names = [s.strip() for s in items if s.strip()]
        if not names:
            raise UnknownFormatError(["(empty)"], self.formats())
        if "all" in names:
            return self.formats()
        unknown = [n for n in names if n not in self.exporters]
        if unknown:
            raise UnknownFormatError(unknown, self.formats())
        return list(dict.fromkeys(names))


def get_plugin_manager() -> pluggy.PluginManager:
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("mulm")
        pm.add_hookspecs(hookspecs)
        for name in DEFAULT_PLUGINS:
            pm.register(importlib.import_module(name), name)
        try:
            _load_entry_points(pm)
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {pm.get_name(exc.plugin) or exc.plugin!r}: {exc}") from None
        _pm = pm
    return _pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = os.environ.get("MULM_LOAD_PLUGINS")
    if allowed is None:
        pm.load_setuptools_entrypoints("mulm")
        return
    from importlib.metadata import entry_points

    wanted = {n.strip() for n in allowed.split(",") if n.strip()}
    for ep in entry_points(group="mulm"):
        if ep.name in wanted and not pm.is_registered(ep.load()):
            pm.register(ep.load(), ep.name)


def get_registry() -> Registry:
    """The registry filled from every plugin's ``register_*`` hooks (built once)."""
    global _registry
    if _registry is None:
        _registry = _build_registry(get_plugin_manager())
    return _registry


def _build_registry(pm: pluggy.PluginManager) -> Registry:
    reg = Registry()

    def adder(kind: str, target: dict, plugin_name: str):
        def add(item) -> None:
            name = item.name
            key = f"{kind}:{name}"
            if name in target:
                raise PluginError(
                    f"{kind} {name!r} is registered twice: by plugin {reg.owners[key]!r} "
                    f"and by plugin {plugin_name!r}"
                )
            target[name] = item
            reg.owners[key] = plugin_name

        return add

    # Call each plugin's implementation separately so duplicates name both plugins.
    for impl in pm.hook.register_exporters.get_hookimpls():
        impl.function(register=adder("exporter", reg.exporters, impl.plugin_name))
    for impl in pm.hook.register_block_types.get_hookimpls():
        impl.function(register=adder("block type", reg.block_types, impl.plugin_name))

    def add_suite(format_name: str, module: str) -> None:
        reg.suites.setdefault(format_name, []).append(module)

    pm.hook.register_suites(register=add_suite)
    return reg


def reset() -> None:
    """Forget the manager and registry (tests that register plugins call this)."""
    global _pm, _registry
    _pm = None
    _registry = None


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object at run time (conftest files, tests) and rebuild the registry."""
    global _registry
    pm = get_plugin_manager()
    try:
        pm.register(plugin, name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        raise PluginError(f"plugin {name or plugin!r}: {exc}") from None
    _registry = None


def unregister_plugin(plugin: object) -> None:
    global _registry
    get_plugin_manager().unregister(plugin)
    _registry = None
