CREATE TABLE "events" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "events_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"time" timestamp with time zone NOT NULL,
	"bus" text NOT NULL,
	"topic" text NOT NULL,
	"device" text,
	"severity" text,
	"kind" text,
	"payload" text NOT NULL
);
--> statement-breakpoint
CREATE INDEX "events_time_idx" ON "events" USING btree ("time","id");--> statement-breakpoint
CREATE INDEX "events_device_time_idx" ON "events" USING btree ("device","time");