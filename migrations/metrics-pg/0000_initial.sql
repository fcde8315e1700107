-- IF NOT EXISTS throughout: a database Go plantd's logger created already has
-- metrics(time timestamp, device, channel, value) and keeps its rows; it gains tags.
CREATE TABLE IF NOT EXISTS "metrics" (
	"time" timestamp with time zone NOT NULL,
	"device" text,
	"channel" text,
	"value" double precision,
	"tags" jsonb
);
--> statement-breakpoint
ALTER TABLE "metrics" ADD COLUMN IF NOT EXISTS "tags" jsonb;
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "metrics_time_brin" ON "metrics" USING brin ("time");