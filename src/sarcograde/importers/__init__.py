"""Importers that turn a public collection, as it is published, into a sarcograde manifest."""
