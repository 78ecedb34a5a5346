DROP TABLE object_alerts;
DROP TABLE alerts;
DROP TABLE objects;
