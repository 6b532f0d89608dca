"""The results folder: its tables and their schema, the per-call figures, atomic writes,
compaction, the manifest and the live spool. Written by the nightly job and the live
server, read by the dashboard and `callmood query`."""
