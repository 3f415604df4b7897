-- Airflow 2.x's connection and variable tables as its migrations leave them on PostgreSQL.
CREATE TABLE connection (id serial PRIMARY KEY, conn_id varchar(250) NOT NULL UNIQUE, conn_type varchar(500) NOT NULL,
    description text, host varchar(500), schema varchar(500), login text, password text, port integer,
    is_encrypted boolean, is_extra_encrypted boolean, extra text);
CREATE TABLE variable (id serial PRIMARY KEY, key varchar(250) UNIQUE, val text, description text, is_encrypted boolean);
