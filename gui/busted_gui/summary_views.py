"""The providers and processes/agents tabs, rebuilt once a second while visible.

Part of :class:`busted_gui.app.Dashboard` (a mixin). These tables have a few dozen
rows at most, so rebuilding them is cheaper and simpler than patching them.

A process whose SDK is not known may be "similar to <known agent>": processes are
grouped by how their connections behave (busted.ml.cluster, HDBSCAN over the
TCP_EXCHANGE events), refreshed every SIMILAR_EVERY_S.
"""

from __future__ import annotations

from typing import Any

import dearpygui.dearpygui as dpg

from busted_gui import theme
from busted_gui.events_view import ALL, ROW_HEIGHT
from busted_gui.model import Filter, GroupStats, human_bytes, human_count, visibility

SIMILAR_EVERY_S = 10.0


class SummaryViewsMixin:
    """Builds and rebuilds the providers and processes tabs."""

    def _build_providers(self) -> None:
        dpg.add_text("Everything seen since the dashboard started. Click a provider to "
                     "filter the events table.", color=theme.DIM)
        with dpg.child_window(height=-1, width=-1, tag="providers_area"):
            self._ids["providers_table"] = None

    def _build_processes(self) -> None:
        with dpg.group(horizontal=True):
            dpg.add_text("Group by", color=theme.DIM)
            self._ids["group_by"] = dpg.add_radio_button(
                ("process", "agent identity"), horizontal=True, default_value="process",
                callback=lambda s, a: self.set_group_by("process" if a == "process" else "identity"),
            )
            dpg.add_text("   Click a row to filter the events table by its process.",
                         color=theme.DIM)
        with dpg.child_window(height=-1, width=-1, tag="processes_area"):
            self._ids["processes_table"] = None

    # --- providers and processes (rebuilt once a second while visible) -----------------
    def _update_choices(self) -> None:
        choices = self.store.choices()
        for key, widget in (("provider", "f_provider"), ("content_class", "f_class"),
                            ("decision", "f_decision"), ("process", "f_process")):
            if choices[key] != self._choices.get(key):
                dpg.configure_item(self._ids[widget], items=[ALL, *choices[key]])
        self._choices = choices

    def _rebuild_providers(self, now: float) -> None:
        old = self._ids.get("providers_table")
        if old is not None:
            dpg.delete_item(old)
        cols = ("Provider", "Events", "Requests", "Responses", "Tokens in", "Tokens out",
                "Bytes", "Deny", "Audit", "Allow", "PII", "Processes", "Models", "Last seen")
        with dpg.table(parent="providers_area", header_row=True, row_background=True,
                       policy=dpg.mvTable_SizingStretchProp, borders_innerH=False,
                       borders_innerV=False) as table:
            for name in cols:
                weight = 3.0 if name == "Models" else 1.2 if name == "Provider" else 0.8
                dpg.add_table_column(label=name, init_width_or_weight=weight)
            for name, p in self.store.provider_rows():
                with dpg.table_row(height=ROW_HEIGHT):
                    self._row_selectable(name, name, self._filter_provider)
                    for value in (human_count(p.events), human_count(p.requests),
                                  human_count(p.responses), human_count(p.input_tokens),
                                  human_count(p.output_tokens), human_bytes(p.bytes)):
                        dpg.add_text(value)
                    _count(p.decisions.get("deny", 0), theme.DENY)
                    _count(p.decisions.get("audit", 0), theme.AUDIT)
                    _count(p.decisions.get("allow", 0), theme.ALLOW)
                    _count(p.pii, theme.PII)
                    dpg.add_text(str(len(p.processes)))
                    dpg.add_text(", ".join(m for m, _ in p.models.most_common(4)) or "—",
                                 color=theme.DIM)
                    dpg.add_text(_ago(now, p.last_seen), color=theme.DIM)
        theme.bind_font(table, self.fonts.table)
        self._ids["providers_table"] = table

    def _rebuild_processes(self, now: float) -> None:
        old = self._ids.get("processes_table")
        if old is not None:
            dpg.delete_item(old)
        by_identity = self.group_by == "identity"
        similar = {} if by_identity else self._similar(now)
        cols = ("Agent identity" if by_identity else "Process",
                "Narrative" if by_identity else "Container / pod", "SDK", "Visibility",
                "Events", "Requests", "Deny", "Audit", "Allow", "PII", "Providers", "Models",
                "Last seen")
        with dpg.table(parent="processes_area", header_row=True, row_background=True,
                       policy=dpg.mvTable_SizingStretchProp, borders_innerH=False,
                       borders_innerV=False) as table:
            for name in cols:
                weight = {"Providers": 2.0, "Models": 2.0, "Narrative": 3.2, "Process": 1.4,
                          "Agent identity": 1.8, "Container / pod": 1.3, "SDK": 1.3,
                          "Visibility": 1.3,
                          "Last seen": 0.9}.get(name, 0.62)
                dpg.add_table_column(label=name, init_width_or_weight=weight)
            for g in self.store.group_rows(self.group_by)[:300]:
                with dpg.table_row(height=ROW_HEIGHT):
                    target = (Filter(text=g.key) if by_identity
                              else Filter(process=g.process_name, pid=g.pid))
                    self._row_selectable(g.key, target, self._filter_process)
                    if by_identity:
                        dpg.add_text(g.narrative or "—", color=theme.DIM)
                    else:
                        dpg.add_text(g.container or "—", color=theme.DIM)
                    dpg.add_text(", ".join(sorted(g.sdks))
                                 or similar.get((g.process_name, g.pid), "—"))
                    _visibility(g)
                    dpg.add_text(human_count(g.events))
                    dpg.add_text(human_count(g.requests))
                    _count(g.decisions.get("deny", 0), theme.DENY)
                    _count(g.decisions.get("audit", 0), theme.AUDIT)
                    _count(g.decisions.get("allow", 0), theme.ALLOW)
                    _count(g.pii, theme.PII)
                    dpg.add_text(", ".join(p for p, _ in g.providers.most_common(4)) or "—")
                    dpg.add_text(", ".join(m for m, _ in g.models.most_common(3)) or "—",
                                 color=theme.DIM)
                    dpg.add_text(_ago(now, g.last_seen), color=theme.DIM)
        theme.bind_font(table, self.fonts.table)
        self._ids["processes_table"] = table

    def _similar(self, now: float) -> dict[tuple[str, int], str]:
        """(process, pid) -> "similar to <known agent>" (busted.ml.cluster): the new
        events are fed at each rebuild, the clustering reruns every SIMILAR_EVERY_S."""
        state = getattr(self, "_ml_similar", None)
        if state is None:
            from busted.ml.cluster import ProcessBehaviour

            state = self._ml_similar = {"behaviour": ProcessBehaviour(), "uid": 0, "at": 0.0,
                                        "names": {}}
        store = self.store
        for uid in range(max(state["uid"], store.oldest_uid), store.total):
            event = store.get(uid)
            if event is not None:
                state["behaviour"].feed(event)
        state["uid"] = store.total
        if now - state["at"] >= SIMILAR_EVERY_S:
            state["at"] = now
            state["names"] = state["behaviour"].similar()
        return state["names"]

    def processes_shown(self) -> list[dict[str, Any]]:
        """The processes table as drawn, read back from its widgets (for the test
        hooks): each row's cell texts by column and the texts of its tooltips."""
        table = self._ids.get("processes_table")
        if table is None or not dpg.does_item_exist(table):
            return []
        columns = [dpg.get_item_label(c) for c in dpg.get_item_children(table, 0)]
        rows = []
        for row in dpg.get_item_children(table, 1):
            cells, tips = [], []
            for cell in dpg.get_item_children(row, 1):
                kind = dpg.get_item_type(cell)
                if kind.endswith("mvSelectable"):
                    cells.append(dpg.get_item_label(cell))
                elif kind.endswith("mvGroup"):
                    texts = _texts(cell)
                    cells.append(texts[0])
                    tips.extend(texts[1:])
                else:
                    cells.append(dpg.get_value(cell))
            rows.append({"cells": dict(zip(columns, cells, strict=True)), "tips": tips})
        return rows

    def _row_selectable(self, label: str, user_data: Any, callback) -> None:
        sel = dpg.add_selectable(label=label, span_columns=True, user_data=user_data,
                                 callback=callback, height=18)
        dpg.bind_item_theme(sel, self._themes["row_selectable"])

    def _filter_provider(self, sender, app_data, user_data) -> None:
        self.apply_filter(Filter(provider=user_data))
        self.set_tab("events")

    def _filter_process(self, sender, app_data, user_data) -> None:
        self.apply_filter(user_data)
        self.set_tab("events")



def _visibility(g: GroupStats) -> None:
    """The Visibility cell: red when blind, with why and what to do in its tooltip."""
    label, tip = visibility(g)
    with dpg.group():
        cell = dpg.add_text(label, color=theme.DENY if g.blind is not None
                            else theme.TEXT if g.seen_via else theme.FAINT)
        with dpg.tooltip(cell):
            dpg.add_text(tip, wrap=520)


def _texts(item: int | str) -> list[str]:
    """The values of the text widgets under ``item``, depth first (tooltips too)."""
    out = []
    for child in dpg.get_item_children(item, 1) or []:
        if dpg.get_item_type(child).endswith("mvText"):
            out.append(dpg.get_value(child))
        out.extend(_texts(child))
    return out


def _count(n: int, color: theme.RGBA) -> None:
    """A count cell: coloured when there is something, dim when zero."""
    dpg.add_text(human_count(n), color=color if n else theme.FAINT)


def _ago(now: float, then: float) -> str:
    if not then:
        return "—"
    delta = max(0.0, now - then)
    if delta < 60:
        return f"{delta:.0f} s ago"
    if delta < 3600:
        return f"{delta / 60:.0f} min ago"
    return f"{delta / 3600:.1f} h ago"
