CREATE TABLE `events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`time` integer NOT NULL,
	`bus` text NOT NULL,
	`topic` text NOT NULL,
	`device` text,
	`severity` text,
	`kind` text,
	`payload` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `events_time_idx` ON `events` (`time`,`id`);--> statement-breakpoint
CREATE INDEX `events_device_time_idx` ON `events` (`device`,`time`);