"""Busted's desktop dashboard (Dear PyGui), a separate package so the daemon never
imports a GUI toolkit.

Modules: :mod:`~busted_gui.stream` (the subscription to the daemon's published stream,
on its own thread), :mod:`~busted_gui.model` (bounded event store, filters, aggregates;
pure Python), :mod:`~busted_gui.demo` (synthetic traffic for ``busted ui --demo``),
:mod:`~busted_gui.app` (the window and its render loop), :mod:`~busted_gui.bench`
(``busted bench ui``).
"""
