"""Lead intake (线索录入) and de-duplication (查重): one intake service behind the API, public web forms,
manual entry and Excel/CSV import; normalised keys, name-gram blocking, 撞单 routing and the conflict queue."""
