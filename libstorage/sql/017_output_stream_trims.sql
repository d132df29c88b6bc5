-- How often redone work removed chunks of a stream, and from which index the last time: a reader that
-- already returned chunks compares this with what it saw at its previous read, in the same snapshot as the
-- chunks it reads (the stream_rewound event only wakes it, and may come after a read that shows the close).
ALTER TABLE keel.output_streams
  ADD COLUMN trims int NOT NULL DEFAULT 0,
  ADD COLUMN trimmed_from bigint;
