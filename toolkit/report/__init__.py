"""Self-contained HTML reports: edge vs full heatmaps, verdict, figures, metric tables.

One ``.html`` file, every image embedded as a base64 PNG, no scripts and no external URLs, so it
can be attached to a CI run or mailed. Used by ``edgecam validate`` and reusable by the demo:
give :func:`render_report` a summary dict, per-image records and a few :class:`ReportCase`.
"""

from .html import ReportCase, render_report, write_report

__all__ = ["ReportCase", "render_report", "write_report"]
