"""The presentation floor, between the method and the stages: figures, the report's
Markdown/HTML document, captions and rendered references. It turns what the method measured
into what a person reads, and decides nothing about the numbers; it may import core, data and
method, never stages or the CLI."""
