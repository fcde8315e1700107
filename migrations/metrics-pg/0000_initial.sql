CREATE TABLE "metrics" (
	"time" timestamp with time zone NOT NULL,
	"device" text,
	"channel" text,
	"value" double precision,
	"tags" jsonb
);
--> statement-breakpoint
CREATE INDEX "metrics_time_brin" ON "metrics" USING brin ("time");