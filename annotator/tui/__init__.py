"""The terminal app (Textual): project, annotate, browse, blind review, agreement.

Everything Textual lives in this package; the core (`annotator/`) never imports it. The modules
without a widget in them (launch, project, annotation, queues, confusion, formatting) import no
Textual either, so they can be tested and reused without a terminal.
"""
