"""One module per export format, each behind :class:`vgtool.exports.format.ExportFormat`."""
