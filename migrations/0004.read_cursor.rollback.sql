DROP TRIGGER objects_ack_notify ON objects;
DROP FUNCTION objects_ack_notify();
ALTER TABLE objects DROP COLUMN acked_alert_id;
