"""Colours, fonts and Dear PyGui themes of the dashboard (dark, for all-day use).

Decisions have fixed colours everywhere (deny red, audit amber, allow green); providers
get stable colours from a small palette so a glance at the table groups them.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import dearpygui.dearpygui as dpg

RGBA = tuple[int, int, int, int]

BG = (17, 20, 26, 255)
PANEL = (24, 28, 36, 255)
PANEL_2 = (31, 36, 46, 255)
BORDER = (45, 52, 64, 255)
TEXT = (222, 227, 234, 255)
DIM = (134, 145, 160, 255)
FAINT = (92, 102, 117, 255)
ACCENT = (86, 156, 255, 255)
ACCENT_SOFT = (86, 156, 255, 60)

ALLOW = (72, 199, 116, 255)
AUDIT = (245, 176, 65, 255)
DENY = (240, 82, 82, 255)
PII = (224, 120, 220, 255)

DECISION_COLORS: dict[str, RGBA] = {"allow": ALLOW, "audit": AUDIT, "deny": DENY}
DENY_ROW = (240, 82, 82, 34)
AUDIT_ROW = (245, 176, 65, 18)

STATE_COLORS: dict[str, RGBA] = {
    "live": ALLOW,
    "demo": ACCENT,
    "connecting": AUDIT,
    "stale": AUDIT,
    "no-daemon": DENY,
    "permission": DENY,
    "error": DENY,
}

_PALETTE: tuple[RGBA, ...] = (
    (112, 190, 255, 255),
    (255, 160, 110, 255),
    (150, 220, 140, 255),
    (200, 160, 255, 255),
    (255, 210, 110, 255),
    (110, 220, 210, 255),
    (255, 140, 180, 255),
    (180, 200, 120, 255),
    (160, 180, 255, 255),
    (230, 190, 150, 255),
)
_KNOWN = {
    "OpenAI": (116, 214, 176, 255),
    "Anthropic": (232, 162, 120, 255),
    "Google": (120, 170, 255, 255),
    "MCP": (200, 160, 255, 255),
    "Ollama": (200, 200, 200, 255),
}


def provider_color(name: str) -> RGBA:
    if not name:
        return DIM
    return _KNOWN.get(name) or _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)]


def decision_color(decision: str) -> RGBA:
    return DECISION_COLORS.get(decision, DIM)


_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/share/fonts/TTF"),
)


def _find_font(name: str) -> str | None:
    for directory in _FONT_DIRS:
        candidate = directory / name
        if candidate.exists():
            return str(candidate)
    return None


class Fonts:
    """The fonts in use; any may be 0 (Dear PyGui's built-in font) if none is installed."""

    def __init__(self) -> None:
        self.body = 0
        self.bold = 0
        self.big = 0
        self.mono = 0
        self.small = 0
        self.table = 0
        self.table_bold = 0

    def load(self, scale: float = 1.0) -> None:
        regular = _find_font("DejaVuSans.ttf")
        bold = _find_font("DejaVuSans-Bold.ttf") or regular
        mono = _find_font("DejaVuSansMono.ttf") or regular
        if not regular:
            return
        with dpg.font_registry():
            self.body = self._font(regular, round(15 * scale))
            self.small = self._font(regular, round(13 * scale))
            self.table = self._font(regular, round(14 * scale))
            self.table_bold = self._font(bold, round(14 * scale))
            self.bold = self._font(bold, round(15 * scale))
            self.big = self._font(bold, round(24 * scale))
            self.mono = self._font(mono, round(14 * scale))
        dpg.bind_font(self.body)

    @staticmethod
    def _font(path: str, size: int) -> int | str:
        # Dear PyGui 2 loads the glyphs a label needs on its own (→ ● ▶ …).
        return dpg.add_font(path, size)


def global_theme() -> int | str:
    """The application-wide dark theme."""
    with dpg.theme() as theme, dpg.theme_component(dpg.mvAll):
        c = dpg.add_theme_color
        s = dpg.add_theme_style
        cat = dpg.mvThemeCat_Core
        # Panels are borders, not fills: under software GL (Xvfb, remote X) every
        # large blended fill costs milliseconds a frame. Only the small cards are filled.
        c(dpg.mvThemeCol_WindowBg, BG, category=cat)
        c(dpg.mvThemeCol_ChildBg, (0, 0, 0, 0), category=cat)
        c(dpg.mvThemeCol_PopupBg, PANEL_2, category=cat)
        c(dpg.mvThemeCol_Border, BORDER, category=cat)
        c(dpg.mvThemeCol_Text, TEXT, category=cat)
        c(dpg.mvThemeCol_TextDisabled, DIM, category=cat)
        c(dpg.mvThemeCol_FrameBg, PANEL_2, category=cat)
        c(dpg.mvThemeCol_FrameBgHovered, (40, 47, 60, 255), category=cat)
        c(dpg.mvThemeCol_FrameBgActive, (48, 56, 72, 255), category=cat)
        c(dpg.mvThemeCol_Button, (38, 45, 58, 255), category=cat)
        c(dpg.mvThemeCol_ButtonHovered, (52, 62, 80, 255), category=cat)
        c(dpg.mvThemeCol_ButtonActive, (60, 90, 140, 255), category=cat)
        c(dpg.mvThemeCol_Header, (56, 92, 150, 150), category=cat)
        c(dpg.mvThemeCol_HeaderHovered, (60, 80, 110, 140), category=cat)
        c(dpg.mvThemeCol_HeaderActive, (70, 110, 170, 200), category=cat)
        c(dpg.mvThemeCol_Tab, PANEL, category=cat)
        c(dpg.mvThemeCol_TabHovered, (52, 62, 80, 255), category=cat)
        c(dpg.mvThemeCol_TabActive, (44, 70, 110, 255), category=cat)
        c(dpg.mvThemeCol_TableHeaderBg, PANEL_2, category=cat)
        c(dpg.mvThemeCol_TableBorderStrong, BORDER, category=cat)
        c(dpg.mvThemeCol_TableBorderLight, (32, 37, 46, 255), category=cat)
        c(dpg.mvThemeCol_TableRowBg, (0, 0, 0, 0), category=cat)
        c(dpg.mvThemeCol_TableRowBgAlt, (0, 0, 0, 0), category=cat)
        c(dpg.mvThemeCol_CheckMark, ACCENT, category=cat)
        c(dpg.mvThemeCol_SliderGrab, (70, 82, 102, 255), category=cat)
        c(dpg.mvThemeCol_SliderGrabActive, ACCENT, category=cat)
        c(dpg.mvThemeCol_ScrollbarBg, PANEL, category=cat)
        c(dpg.mvThemeCol_ScrollbarGrab, (58, 66, 80, 255), category=cat)
        c(dpg.mvThemeCol_Separator, BORDER, category=cat)
        c(dpg.mvThemeCol_TitleBgActive, PANEL_2, category=cat)
        c(dpg.mvThemeCol_ModalWindowDimBg, (0, 0, 0, 140), category=cat)
        s(dpg.mvStyleVar_WindowPadding, 10, 8, category=cat)
        s(dpg.mvStyleVar_FramePadding, 8, 4, category=cat)
        s(dpg.mvStyleVar_CellPadding, 5, 2, category=cat)
        s(dpg.mvStyleVar_ItemSpacing, 8, 6, category=cat)
        s(dpg.mvStyleVar_FrameRounding, 4, category=cat)
        s(dpg.mvStyleVar_ChildRounding, 6, category=cat)
        s(dpg.mvStyleVar_WindowRounding, 6, category=cat)
        s(dpg.mvStyleVar_GrabRounding, 4, category=cat)
        s(dpg.mvStyleVar_TabRounding, 4, category=cat)
        s(dpg.mvStyleVar_ScrollbarSize, 12, category=cat)
        s(dpg.mvStyleVar_GrabMinSize, 24, category=cat)
        s(dpg.mvStyleVar_WindowBorderSize, 0, category=cat)
        s(dpg.mvStyleVar_ChildBorderSize, 1, category=cat)
    _plot_theme(theme)
    return theme


def _plot_theme(theme: int | str) -> None:
    with dpg.theme_component(dpg.mvPlot, parent=theme):
        dpg.add_theme_color(dpg.mvPlotCol_PlotBg, PANEL, category=dpg.mvThemeCat_Plots)
        dpg.add_theme_color(dpg.mvPlotCol_FrameBg, PANEL, category=dpg.mvThemeCat_Plots)
        dpg.add_theme_color(dpg.mvPlotCol_PlotBorder, (0, 0, 0, 0), category=dpg.mvThemeCat_Plots)
        dpg.add_theme_color(dpg.mvPlotCol_AxisGrid, (255, 255, 255, 18),
                            category=dpg.mvThemeCat_Plots)
        dpg.add_theme_color(dpg.mvPlotCol_AxisText, DIM, category=dpg.mvThemeCat_Plots)
        dpg.add_theme_style(dpg.mvPlotStyleVar_PlotPadding, 6, 6, category=dpg.mvThemeCat_Plots)


def series_theme(color: RGBA) -> int | str:
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvLineSeries):
            dpg.add_theme_color(dpg.mvPlotCol_Line, color, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_LineWeight, 1.6, category=dpg.mvThemeCat_Plots)
        with dpg.theme_component(dpg.mvShadeSeries):
            dpg.add_theme_color(dpg.mvPlotCol_Fill, (color[0], color[1], color[2], 50),
                                category=dpg.mvThemeCat_Plots)
    return theme


def child_theme(bg: RGBA, border: RGBA = BORDER) -> int | str:
    """A panel with its own background (cards, banners)."""
    with dpg.theme() as theme, dpg.theme_component(dpg.mvAll):
        dpg.add_theme_color(dpg.mvThemeCol_ChildBg, bg, category=dpg.mvThemeCat_Core)
        dpg.add_theme_color(dpg.mvThemeCol_Border, border, category=dpg.mvThemeCat_Core)
    return theme


def button_theme(bg: RGBA, hover: RGBA, text: RGBA = TEXT) -> int | str:
    with dpg.theme() as theme, dpg.theme_component(dpg.mvButton):
        dpg.add_theme_color(dpg.mvThemeCol_Button, bg, category=dpg.mvThemeCat_Core)
        dpg.add_theme_color(dpg.mvThemeCol_ButtonHovered, hover, category=dpg.mvThemeCat_Core)
        dpg.add_theme_color(dpg.mvThemeCol_ButtonActive, hover, category=dpg.mvThemeCat_Core)
        dpg.add_theme_color(dpg.mvThemeCol_Text, text, category=dpg.mvThemeCat_Core)
    return theme


def row_selectable_theme() -> int | str:
    """A selectable draws its label ~3 px above plain text in the same table row: with a
    little height and its label aligned to the bottom, the row lines up."""
    with dpg.theme() as theme, dpg.theme_component(dpg.mvSelectable):
        dpg.add_theme_style(dpg.mvStyleVar_SelectableTextAlign, 0, 1,
                            category=dpg.mvThemeCat_Core)
    return theme


def bind_font(item: Any, font: Any) -> None:
    """Bind a font if one was loaded (0 means Dear PyGui's built-in font)."""
    if font:
        dpg.bind_item_font(item, font)
