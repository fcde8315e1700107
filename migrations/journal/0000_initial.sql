CREATE TABLE `dead_letters` (
	`key` text PRIMARY KEY NOT NULL,
	`service` text NOT NULL,
	`body` blob NOT NULL,
	`reason` text NOT NULL,
	`detail` text NOT NULL,
	`attempts` integer NOT NULL,
	`received_at` integer NOT NULL,
	`dead_at` integer NOT NULL,
	`failures` text NOT NULL,
	`replays` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `dead_letters_dead_idx` ON `dead_letters` (`dead_at`);--> statement-breakpoint
CREATE TABLE `journal_replies` (
	`key` text PRIMARY KEY NOT NULL,
	`service` text NOT NULL,
	`body` blob NOT NULL,
	`stored_at` integer NOT NULL,
	`expires_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `journal_replies_expires_idx` ON `journal_replies` (`expires_at`);--> statement-breakpoint
CREATE TABLE `journal_requests` (
	`key` text PRIMARY KEY NOT NULL,
	`service` text NOT NULL,
	`body` blob NOT NULL,
	`received_at` integer NOT NULL,
	`expires_at` integer NOT NULL,
	`caller_deadline` integer,
	`keyed` integer NOT NULL,
	`failures` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `journal_requests_received_idx` ON `journal_requests` (`received_at`);