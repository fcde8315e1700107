CREATE TABLE "state_key_history" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "state_key_history_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"scope" "bytea" NOT NULL,
	"key" "bytea" NOT NULL,
	"revision" bigint NOT NULL,
	"op" text NOT NULL,
	"old_value" "bytea",
	"new_value" "bytea",
	"actor" "bytea" NOT NULL,
	"at" bigint NOT NULL
);
--> statement-breakpoint
CREATE INDEX "state_key_history_scope_key_id" ON "state_key_history" USING btree ("scope","key","id");