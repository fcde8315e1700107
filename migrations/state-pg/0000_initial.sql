CREATE TABLE "state_change_seq" (
	"scope" "bytea" PRIMARY KEY NOT NULL,
	"seq" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "state_entries" (
	"scope" "bytea" NOT NULL,
	"key" "bytea" NOT NULL,
	"value" "bytea" NOT NULL,
	"revision" bigint NOT NULL,
	"updated_at" bigint NOT NULL,
	CONSTRAINT "state_entries_scope_key_pk" PRIMARY KEY("scope","key")
);
--> statement-breakpoint
CREATE TABLE "state_idempotency_keys" (
	"owner" "bytea" NOT NULL,
	"key" text NOT NULL,
	"fingerprint" text NOT NULL,
	"reply" text NOT NULL,
	"created_at" bigint NOT NULL,
	"expires_at" bigint NOT NULL,
	CONSTRAINT "state_idempotency_keys_owner_key_pk" PRIMARY KEY("owner","key")
);
--> statement-breakpoint
CREATE TABLE "state_scopes" (
	"name" "bytea" PRIMARY KEY NOT NULL,
	"created_at" bigint NOT NULL
);
--> statement-breakpoint
ALTER TABLE "state_entries" ADD CONSTRAINT "state_entries_scope_state_scopes_name_fk" FOREIGN KEY ("scope") REFERENCES "public"."state_scopes"("name") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "state_idempotency_keys_expires_at" ON "state_idempotency_keys" USING btree ("expires_at");