CREATE TABLE `key_history` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`scope` text NOT NULL,
	`key` text NOT NULL,
	`revision` integer NOT NULL,
	`op` text NOT NULL,
	`old_value` text,
	`new_value` text,
	`actor` text NOT NULL,
	`at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `key_history_scope_key_id` ON `key_history` (`scope`,`key`,`id`);