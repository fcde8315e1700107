CREATE TABLE `metrics` (
	`time` integer NOT NULL,
	`device` text,
	`channel` text,
	`value` real,
	`tags` text
);
--> statement-breakpoint
CREATE INDEX `metrics_series_time_idx` ON `metrics` (`device`,`channel`,`time`);--> statement-breakpoint
CREATE INDEX `metrics_time_idx` ON `metrics` (`time`);