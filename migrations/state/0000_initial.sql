CREATE TABLE `entries` (
	`scope` text NOT NULL,
	`key` text NOT NULL,
	`value` text NOT NULL,
	`revision` integer NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`scope`, `key`),
	FOREIGN KEY (`scope`) REFERENCES `scopes`(`name`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE TABLE `scopes` (
	`name` text PRIMARY KEY NOT NULL,
	`created_at` integer NOT NULL
);
