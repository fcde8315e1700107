CREATE TABLE "dead_letters" (
	"key" text PRIMARY KEY NOT NULL,
	"service" text NOT NULL,
	"body" "bytea" NOT NULL,
	"reason" text NOT NULL,
	"detail" text NOT NULL,
	"attempts" integer NOT NULL,
	"received_at" bigint NOT NULL,
	"dead_at" bigint NOT NULL,
	"failures" text NOT NULL,
	"replays" integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE "journal_replies" (
	"key" text PRIMARY KEY NOT NULL,
	"service" text NOT NULL,
	"body" "bytea" NOT NULL,
	"stored_at" bigint NOT NULL,
	"expires_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "journal_requests" (
	"key" text PRIMARY KEY NOT NULL,
	"service" text NOT NULL,
	"body" "bytea" NOT NULL,
	"received_at" bigint NOT NULL,
	"expires_at" bigint NOT NULL,
	"caller_deadline" bigint,
	"keyed" integer NOT NULL,
	"failures" text NOT NULL
);
--> statement-breakpoint
CREATE INDEX "dead_letters_dead_idx" ON "dead_letters" USING btree ("dead_at","key");--> statement-breakpoint
CREATE INDEX "journal_replies_expires_idx" ON "journal_replies" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "journal_requests_received_idx" ON "journal_requests" USING btree ("received_at");