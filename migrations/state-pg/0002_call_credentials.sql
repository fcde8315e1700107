CREATE TABLE "state_call_credentials" (
	"jti" text PRIMARY KEY NOT NULL,
	"delivery" text,
	"expires_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE INDEX "state_call_credentials_expires_at" ON "state_call_credentials" USING btree ("expires_at");