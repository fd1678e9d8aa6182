"""The bottom floor every package stands on: the command-line convention (`cli`) and file writing (`files`).

It imports nothing from `keras_effnet`, `training`, `edge` or `study`; they all import it.
"""
