-- The sample database of the integration tests (C# SampleDatabase.Create and the Pester helper New-PgTestSampleDatabase).
-- {ITEM_ROWS} is replaced with the number of rows of public.items.
create schema sales;
create schema "Ünïcode schema";
create table public.items(id int primary key, name text not null, price numeric(10,2), created timestamptz not null default '2026-01-01');
insert into public.items select g, 'item ' || g, g * 1.5, timestamptz '2026-01-01' + g * interval '1 minute' from generate_series(1, {ITEM_ROWS}) g;
comment on table public.items is 'Every item we sell';
create table sales.orders(id serial primary key, item_id int not null references public.items(id), qty int not null, note text);
insert into sales.orders(item_id, qty, note) select (g % least(1000, {ITEM_ROWS})) + 1, g % 7, 'note ü€ ' || g from generate_series(1, 5000) g;
create index orders_item on sales.orders(item_id);
create view sales.order_totals as select item_id, sum(qty) as qty from sales.orders group by item_id;
create table "Ünïcode schema"."Tåble"(k text primary key, v jsonb);
insert into "Ünïcode schema"."Tåble" values ('a', '{"x": 1}'), ('ß', '{"y": [1,2,3]}');
create function sales.add(a int, b int) returns int language sql immutable as 'select a + b';
create sequence sales.invoice_no;
select setval('sales.invoice_no', 42);
select lo_from_bytea(0, convert_to('large object one', 'UTF8'));
select lo_from_bytea(0, decode(repeat('00ff', 5000), 'hex'));
