-- IF NOT EXISTS: an operator may have made this index by hand on a Go plantd table.
CREATE INDEX IF NOT EXISTS "metrics_series_time_idx" ON "metrics" USING btree ("device","channel","time");