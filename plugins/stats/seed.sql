-- Demo data for the embedded SQLite database: 12 tickets over the last 60 days.
-- SQLite syntax (datetime('now', …)); the counts the Stats tests check are listed at the end.
INSERT INTO ticket_state_type (id, name) VALUES (1, 'new'), (2, 'open'), (3, 'closed'), (4, 'pending reminder'), (5, 'merged');
INSERT INTO ticket_state (id, name, type_id) VALUES
    (1, 'new', 1), (2, 'open', 2), (3, 'closed successful', 3), (4, 'closed unsuccessful', 3),
    (5, 'pending reminder', 4), (6, 'merged', 5);
INSERT INTO ticket_priority (id, name) VALUES (1, '1 very low'), (2, '2 low'), (3, '3 normal'), (4, '4 high'), (5, '5 very high');
INSERT INTO ticket_type (id, name) VALUES (1, 'Incident'), (2, 'Service Request'), (3, 'Problem');
INSERT INTO queue (id, name) VALUES (1, 'Raw'), (2, 'Support'), (3, 'Billing');
INSERT INTO users (id, login, first_name, last_name) VALUES (1, 'root@localhost', 'Admin', 'OTRS'), (2, 'ann', 'Ann', 'Lee'), (3, 'bob', 'Bob', 'Stone');
INSERT INTO ticket (id, tn, title, queue_id, ticket_state_id, ticket_priority_id, type_id, user_id, create_time, change_time) VALUES
    (1,  '2026112610000001', 'Printer on fire',            2, 2, 5, 1,    2, datetime('now', '-1 days'),  datetime('now', '-1 hours')),
    (2,  '2026112610000002', 'VPN drops every hour',       2, 2, 4, 1,    2, datetime('now', '-2 days'),  datetime('now', '-2 hours')),
    (3,  '2026112610000003', 'New laptop for Carla',       2, 1, 3, 2,    3, datetime('now', '-3 days'),  datetime('now', '-3 hours')),
    (4,  '2026112610000004', 'Invoice 4711 is wrong',      3, 5, 3, 2,    3, datetime('now', '-5 days'),  datetime('now', '-4 hours')),
    (5,  '2026112610000005', 'Password reset',             1, 3, 2, 2,    2, datetime('now', '-6 days'),  datetime('now', '-5 hours')),
    (6,  '2026112610000006', 'Mail server slow',           2, 3, 3, 3,    1, datetime('now', '-10 days'), datetime('now', '-6 hours')),
    (7,  '2026112610000007', 'Refund for order 1234',      3, 4, 3, NULL, 3, datetime('now', '-12 days'), datetime('now', '-7 hours')),
    (8,  '2026112610000008', 'Duplicate of 1',             2, 6, 1, 1,    2, datetime('now', '-15 days'), datetime('now', '-8 hours')),
    (9,  '2026112610000009', 'Wifi in meeting room',       1, 1, 3, NULL, 1, datetime('now', '-20 days'), datetime('now', '-9 hours')),
    (10, '2026112610000010', 'Access to shared drive',     2, 3, 2, 2,    3, datetime('now', '-40 days'), datetime('now', '-10 hours')),
    (11, '2026112610000011', 'Monitor flickers',           2, 5, 3, 1,    2, datetime('now', '-45 days'), datetime('now', '-11 hours')),
    (12, '2026112610000012', 'Quarterly billing report',   3, 3, 3, 3,    3, datetime('now', '-60 days'), datetime('now', '-12 hours'));
-- all: total 12, open 4 (new: 3, 9; open: 1, 2), pending 2 (4, 11), closed 6 (5, 6, 7, 8, 10, 12)
-- 7d: tickets 1-5 -> total 5, open 3, pending 1, closed 1
