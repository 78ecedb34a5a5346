DROP FUNCTION alert_frame(alerts);
DROP TRIGGER alerts_notify ON alerts;
DROP FUNCTION alerts_notify();
DROP TRIGGER alerts_assign_id ON alerts;
DROP FUNCTION alerts_assign_id();
ALTER TABLE alerts ALTER COLUMN id SET DEFAULT nextval('alerts_id_seq');
