"""PDK generation: plug-in development kits from an OpenAPI document.

It owns the language-neutral model of operations, events and hooks
(``model``), the naming rules they all share (``naming``: words, cases,
unique names), rendering templates (``generate``) and one module per language
(``assemblyscript``, ``c``, ``rust``) that maps the model to its names and
types. It imports ``hostwire._hostapi`` (the document), ``hostwire._contract`` (export
names, input sections) and ``hostwire._errors``; nothing at run time imports it but the CLI.
"""

from hostwire._pdk.generate import LANGUAGES, generate, language, scaffold

__all__ = ["LANGUAGES", "generate", "language", "scaffold"]
